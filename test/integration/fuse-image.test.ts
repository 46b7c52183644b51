import assert from "node:assert/strict";
import { open, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { FuseImageServer, REQUEST_TIMEOUT_SEC } from "../../src/restore/vm/fuse/image-server.ts";
import { fuseUnavailable, ourMounts } from "../../src/restore/vm/fuse/mount.ts";
import { warmFuseWorkers } from "../../src/restore/vm/fuse/worker-pool.ts";
import { CHUNK_PAGES, SnapshotStore } from "../../src/snapshot/store/index.ts";
import { HrError } from "../../src/util/errors.ts";
import { BLOCKS, buildSmall, TempDirs, type Expected } from "../unit/snapshot/store-fixture.ts";

/**
 * The kernel-paging backend's FUSE file against the real kernel (no QEMU): what a process reads
 * through the mount is the snapshot's checked image, stores put those bytes in the page cache,
 * a damaged chunk is refused with EIO and reported naming the page and file, and closing
 * unmounts. Real VMs on this backend: the contract suite in snapshot.test.ts.
 */
const unavailable = await fuseUnavailable();

describe("FUSE image server (real kernel FUSE)", { skip: unavailable }, () => {
  const dirs = new TempDirs();
  let store: SnapshotStore;
  let expected: Expected;
  const block = BLOCKS[0]!;

  before(async () => {
    warmFuseWorkers(1);
    store = new SnapshotStore(await dirs.make());
    expected = await buildSmall(store, "fuse", 4242);
  });
  after(() => dirs.removeAll());

  function image(): Buffer {
    const out = Buffer.alloc(block.usedLength);
    for (const [page, data] of expected.get(`alpha|${block.id}`) ?? []) data?.copy(out, page * 4096);
    return out;
  }

  async function serve(
    run: (server: FuseImageServer, mountDir: string) => Promise<void>,
    name = "fuse",
    extra: { stallReads?: boolean } = {},
  ): Promise<FuseImageServer> {
    const reader = await store.open(name);
    const mountDir = join(await dirs.make("hr-fuse-mnt-"), "ram");
    const server = await FuseImageServer.start({
      vm: "alpha",
      memory: await reader.memory("alpha"),
      blockId: block.id,
      mountDir,
      commandAt: performance.now(),
      maxReadahead: 0,
      ...extra,
    });
    try {
      await run(server, mountDir);
    } finally {
      await server.close();
      await reader.close();
    }
    assert.deepEqual(await ourMounts(mountDir), [], "closing unmounts");
    return server;
  }

  it("serves the checked image: a read through the mount is the snapshot's memory", async () => {
    const server = await serve(async (running) => {
      assert.equal((await stat(running.path)).size, block.usedLength);
      assert.deepEqual(await readFile(running.path), image());
    });
    assert.ok(server.reads.length > 0, "the kernel asked the worker");
    assert.equal(
      server.reads.reduce((sum, read) => sum + read.size, 0),
      block.usedLength,
      "each byte was asked for once (then it was in the page cache)",
    );
  });

  it("stores checked chunks ahead: reads of them are page-cache hits, never READs", async () => {
    await serve(async (running) => {
      running.storeChunks(0, 4);
      assert.ok(running.isChecked(0) && running.isChecked(3));
      const handle = await open(running.path, "r");
      try {
        const bytes = Buffer.alloc(4 * CHUNK_PAGES * 4096);
        await handle.read(bytes, 0, bytes.length, 0);
        assert.deepEqual(bytes, image().subarray(0, bytes.length));
      } finally {
        await handle.close();
      }
      assert.equal(running.reads.length, 0, `no READ for stored pages: ${JSON.stringify(running.reads)}`);
      assert.equal(running.storedBytes, 4 * CHUNK_PAGES * 4096);
    });
  });

  it("refuses a damaged chunk with EIO and reports it, naming the page and the file", async () => {
    await buildSmall(store, "damaged", 4242);
    const reader = await store.open("damaged");
    const raw = (await reader.memory("alpha")).rawPath(block.id);
    await reader.close();
    const bytes = await readFile(raw);
    const page = 2 * CHUNK_PAGES + 3;
    bytes[page * 4096 + 100] = (bytes[page * 4096 + 100] ?? 0) ^ 0x40;
    await writeFile(raw, bytes);
    let failure: HrError | undefined;
    await serve(async (running) => {
      running.onFailure((error) => {
        failure = error;
      });
      const handle = await open(running.path, "r");
      try {
        const good = Buffer.alloc(4096);
        await handle.read(good, 0, 4096, 0);
        await assert.rejects(handle.read(Buffer.alloc(4096), 0, 4096, page * 4096), /EIO|input\/output/i);
      } finally {
        await handle.close();
      }
      assert.throws(() => running.storeChunks(2, 1), /chunk 2 checksum mismatch/);
      for (let wait = 0; wait < 50 && failure === undefined; wait++)
        await new Promise((r) => setTimeout(r, 20));
    }, "damaged");
    assert.ok(failure, "the failure was reported");
    assert.equal(failure.code, "SNAPSHOT_CORRUPT");
    assert.match(failure.message, /VM alpha/);
    assert.match(failure.message, new RegExp(`page ${page}\\b`));
    assert.match(failure.message, /chunk 2 checksum mismatch/);
  });
  it("a stalled worker: the kernel ends the connection after the request timeout; the reader fails, the failure names the VM", async () => {
    let failure: HrError | undefined;
    await serve(
      async (running) => {
        running.onFailure((error) => {
          failure = error;
        });
        const from = performance.now();
        const handle = await open(running.path, "r");
        try {
          // The kernel's check runs every 15 s: the READ waits 15-30 s, then fails.
          await assert.rejects(handle.read(Buffer.alloc(4096), 0, 4096, 0), /ECONNABORTED|ENOTCONN|EIO/i);
        } finally {
          await handle.close().catch(() => undefined);
        }
        const waited = performance.now() - from;
        assert.ok(
          waited >= REQUEST_TIMEOUT_SEC * 1000 - 1000 && waited < 60_000,
          `waited ${Math.round(waited)} ms`,
        );
        for (let wait = 0; wait < 100 && failure === undefined; wait++)
          await new Promise((r) => setTimeout(r, 20));
      },
      "fuse",
      { stallReads: true },
    );
    assert.ok(failure, "the failure was reported");
    assert.match(failure.message, /VM alpha: the connection of its guest RAM file system ended/);
    assert.match(failure.message, /waits more than 15 s/);
  });

  it("close ends the connection even while a process still holds the file (that process then fails, it does not wait)", async () => {
    let held: Awaited<ReturnType<typeof open>> | undefined;
    await serve(async (running) => {
      held = await open(running.path, "r");
      await held.read(Buffer.alloc(4096), 0, 4096, 0);
      const closing = running.close();
      const bounded = new Promise<"late">((resolve) => setTimeout(() => resolve("late"), 10_000).unref());
      assert.notEqual(await Promise.race([closing.then(() => "closed" as const), bounded]), "late");
      await assert.rejects(
        held.read(Buffer.alloc(4096), 0, 4096, 8 * 4096),
        /ENOTCONN|ECONNABORTED|EIO|not connected/i,
      );
    });
    await held?.close().catch(() => undefined);
  });
});
