/**
 * Range checks of the memory reader (one read for many chunks, ahead of the page server's need):
 * pages read after a range check are the stored ones, concurrent readers share the range's read,
 * and a damaged chunk anywhere in a range is refused — by the range and by every page read of it.
 */
import assert from "node:assert/strict";
import { open } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { SnapshotStore } from "../../../src/snapshot/store/index.ts";
import { isHrError } from "../../../src/util/errors.ts";
import { CHUNK_PAGES } from "../../../src/snapshot/store/layout.ts";
import { BLOCKS, buildSmall, rejectsHr, TempDirs, type Expected } from "./store-fixture.ts";

const dirs = new TempDirs();
after(() => dirs.removeAll());
const ZERO = Buffer.alloc(4096);

describe("memory reader range checks", () => {
  let store: SnapshotStore;
  let expected: Expected;
  const spec = BLOCKS[0]!;
  const block = { id: spec.id, pages: spec.usedLength / 4096 };

  before(async () => {
    store = new SnapshotStore(await dirs.make(), { stagingPages: 64 });
    expected = await buildSmall(store, "range", 777);
  });

  it("checks every chunk of a block in ranges of any size, then serves the stored pages", async () => {
    for (const span of [1, 5, CHUNK_PAGES, 3 * CHUNK_PAGES + 7, block.pages]) {
      const reader = await store.open("range");
      try {
        const memory = await reader.memory("alpha");
        for (let first = 0; first < block.pages; first += span) {
          await memory.checkRange(block.id, first, Math.min(span, block.pages - first));
        }
        for (let page = 0; page < block.pages; page++)
          assert.ok(memory.isChecked(block.id, page), `page ${page}`);
        const written = expected.get(`alpha|${block.id}`)!;
        for (let page = 0; page < block.pages; page++) {
          assert.deepEqual(await memory.readPage(block.id, page), written.get(page) ?? ZERO, `page ${page}`);
        }
      } finally {
        await reader.close();
      }
    }
  });

  it("shares one range read with page reads issued meanwhile", async () => {
    const reader = await store.open("range");
    try {
      const memory = await reader.memory("alpha");
      const written = expected.get(`alpha|${block.id}`)!;
      const range = memory.checkRange(block.id, 0, block.pages);
      const pages = await Promise.all(
        Array.from({ length: block.pages }, (_, page) => memory.readPage(block.id, page)),
      );
      await range;
      pages.forEach((data, page) => assert.deepEqual(data, written.get(page) ?? ZERO, `page ${page}`));
    } finally {
      await reader.close();
    }
  });

  it("refuses a range holding a damaged chunk, and every page read waiting on it", async () => {
    const reader = await store.open("range");
    const written = expected.get(`alpha|${block.id}`)!;
    const stored = [...written.entries()].find(([page, data]) => data !== undefined && page >= CHUNK_PAGES);
    assert.ok(stored, "a stored page past the first chunk");
    const [page] = stored;
    const path = (await reader.memory("alpha")).rawPath(block.id);
    const file = await open(path, "r+");
    try {
      const byte = Buffer.alloc(1);
      await file.read(byte, 0, 1, page * 4096 + 100);
      byte[0] = (byte[0] ?? 0) ^ 0x40;
      await file.write(byte, 0, 1, page * 4096 + 100);
    } finally {
      await file.close();
    }
    try {
      const memory = await reader.memory("alpha");
      const range = memory.checkRange(block.id, 0, block.pages);
      const waiting = memory.readPage(block.id, page);
      await assert.rejects(
        range,
        (error: unknown) =>
          isHrError(error, "SNAPSHOT_CORRUPT") &&
          new RegExp(`chunk ${Math.floor(page / CHUNK_PAGES)} checksum mismatch$`).test(error.message),
      );
      await rejectsHr(waiting, "SNAPSHOT_CORRUPT");
      await rejectsHr(memory.readPage(block.id, page), "SNAPSHOT_CORRUPT");
      assert.equal(memory.isChecked(block.id, page), false);
    } finally {
      await reader.close();
    }
  });
});
