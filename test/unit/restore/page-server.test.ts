/**
 * The page server against a fake post-copy destination on a temp unix socket (no QEMU): the
 * stream it writes is parsed with MigrationStreamReader, page requests are sent with
 * encodeReturnPathMessage.
 */
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, it } from "node:test";
import { PageServer, type PageServerOptions } from "../../../src/restore/vm/page-server.ts";
import { AddressOrderPolicy, type PagePolicy } from "../../../src/restore/vm/page-server-policy.ts";
import { isHrError } from "../../../src/util/errors.ts";
import {
  FakeDestination,
  fakeSnapshot,
  PAGE,
  type FakeBlock,
  type FakeSnapshot,
} from "./page-server-fixture.ts";

const BLOCKS: FakeBlock[] = [
  { id: "ram0", pages: 2048, present: (page) => page % 5 !== 0 },
  { id: "/rom@etc/acpi/tables", pages: 32, present: (page) => page < 20 },
  { id: "pc.bios", pages: 64, present: () => true },
];
const TOTAL = BLOCKS.reduce((sum, block) => sum + block.pages, 0);
/** Pages holding data (the rest are zero, left to the destination unless asked for). */
const DATA = BLOCKS.reduce((sum, block) => {
  let count = 0;
  for (let page = 0; page < block.pages; page += 1) if (block.present(page)) count += 1;
  return sum + count;
}, 0);

const open: { fake?: FakeDestination; snapshot?: FakeSnapshot; server?: PageServer }[] = [];

async function setup(
  options: Partial<PageServerOptions> & {
    blocks?: FakeBlock[];
    corrupt?: (b: string, p: number) => boolean;
    syncCheck?: boolean;
  } = {},
): Promise<{ fake: FakeDestination; snapshot: FakeSnapshot; server: PageServer }> {
  const snapshot = await fakeSnapshot(options.blocks ?? BLOCKS, {
    corrupt: options.corrupt,
    syncCheck: options.syncCheck,
  });
  const fake = await FakeDestination.listen(snapshot.dir);
  const entry: (typeof open)[number] = { fake, snapshot };
  open.push(entry);
  const socket = await fake.connect();
  const server = PageServer.start({
    vm: "vm1",
    socket,
    source: snapshot.source,
    policy: options.policy ?? new AddressOrderPolicy(),
    ...options,
  });
  entry.server = server;
  return { fake, snapshot, server };
}

afterEach(async () => {
  for (const entry of open.splice(0)) {
    entry.server?.abort("test over");
    await entry.fake?.close();
    await entry.snapshot?.cleanup();
  }
});

/**
 * Every page with data delivered once with its data; a zero page either left to the destination
 * (its discarded RAM reads as zero) or, when it was asked for or `sendZero`, sent once as a ZERO
 * record; END and EOF.
 */
function assertComplete(
  fake: FakeDestination,
  snapshot: FakeSnapshot,
  blocks = BLOCKS,
  sendZero = false,
): void {
  assert.deepEqual(fake.duplicates, [], "no page twice");
  const sent = new Set(fake.pages.map((page) => `${page.block}:${page.page}`));
  for (const block of blocks) {
    for (let page = 0; page < block.pages; page += 1) {
      if (block.present(page) || sendZero)
        assert.ok(sent.has(`${block.id}:${page}`), `${block.id}:${page} sent`);
    }
  }
  for (const page of fake.pages) {
    const block = blocks.find((candidate) => candidate.id === page.block)!;
    if (block.present(page.page)) {
      assert.equal(page.kind, "data", `${page.block}:${page.page}`);
      assert.ok(page.data?.equals(snapshot.data(page.block, page.page)), `${page.block}:${page.page} data`);
    } else {
      assert.equal(page.kind, "zero", `${page.block}:${page.page} is a ZERO record`);
    }
  }
  assert.ok(fake.eof, "END and EOF");
}

async function rejection(promise: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await promise;
  } catch (error) {
    assert.ok(isHrError(error), String(error));
    return { code: error.code, message: error.message };
  }
  assert.fail("expected a rejection");
}

void describe("page server", () => {
  void it("plays the post-copy stream in the recipe's order and delivers every page once", async () => {
    const { fake, snapshot, server } = await setup();
    const prepared = await server.prepared;
    assert.ok(prepared.packageBytes > 100 && prepared.prefetchPages === 0);
    server.markStarted();
    const done = await server.done;
    assertComplete(fake, snapshot);
    const kinds = fake.commands.map((command) => command.cmd);
    assert.deepEqual(kinds.slice(0, 3), ["openReturnPath", "ping", "advise"]);
    const discards = fake.commands.filter((command) => command.cmd === "ramDiscard");
    assert.equal(discards.length, BLOCKS.length, "nothing prefetched: each whole block is discarded");
    assert.ok(fake.package?.subarray(0, 5).equals(Buffer.from("0800040000", "hex")), "LISTEN first");
    assert.ok(fake.package?.subarray(-5).equals(Buffer.from("0800050000", "hex")), "RUN last");
    assert.equal(done.stats.pagesWritten, DATA, "no zero page sent unasked");
    assert.equal(done.stats.pagesLeftZero, TOTAL - DATA);
    assert.equal(done.stats.pagesBeforeStart + done.stats.pagesAfterStart, DATA);
    assert.equal(done.stats.faults.faults, 0);
  });

  void it("loads the prefetch list before LISTEN and discards every other page", async () => {
    const prefetch = [
      { blockId: "ram0", page: 7 },
      { blockId: "ram0", page: 3 },
      { blockId: "pc.bios", page: 63 },
      { blockId: "ram0", page: 7 },
    ];
    const { fake, snapshot, server } = await setup({ prefetch });
    const prepared = await server.prepared;
    assert.equal(prepared.prefetchPages, 3, "deduplicated");
    const early = fake.pages.filter((page) => !page.postcopy).map((page) => `${page.block}:${page.page}`);
    assert.deepEqual(early, ["ram0:7", "ram0:3", "pc.bios:63"]);
    const ranges = fake.commands.flatMap((command) =>
      command.cmd === "ramDiscard" ? command.ranges.map((range) => ({ block: command.block, ...range })) : [],
    );
    assert.deepEqual(
      ranges.filter((range) => range.block === "ram0"),
      [
        { block: "ram0", start: 0, length: 3 * PAGE },
        { block: "ram0", start: 4 * PAGE, length: 3 * PAGE },
        { block: "ram0", start: 8 * PAGE, length: 2040 * PAGE },
      ],
    );
    assert.deepEqual(
      ranges.filter((range) => range.block === "pc.bios"),
      [{ block: "pc.bios", start: 0, length: 63 * PAGE }],
    );
    await server.done;
    assertComplete(fake, snapshot);
  });

  void it("answers a request ahead of the background queue, and never sends a page twice", async () => {
    const { fake, snapshot, server } = await setup({ tuning: { maxQueuedBytes: 32 * 1024 } });
    await server.prepared;
    server.markStarted();
    const wanted = [1990, 1500, 1200];
    const sentAt = new Map<number, number>();
    fake.onChunk = () => {
      const next = wanted.find((page) => !sentAt.has(page));
      if (next === undefined || fake.pages.length < 50) return;
      sentAt.set(next, fake.pages.length);
      fake.request("ram0", next);
      fake.request("ram0", next); // asked twice: still sent once
    };
    const done = await server.done;
    assertComplete(fake, snapshot);
    for (const [page, at] of sentAt) {
      const seq = fake.seqOf("ram0", page);
      // What may come first: the bounded user-space queue, the kernel's socket buffers and
      // what the destination had buffered; far less than the ~1800 pages still to go.
      assert.ok(seq - at < 200, `page ${page} requested at #${at} arrived at #${seq}`);
    }
    assert.equal(done.stats.faults.faults, 6);
    assert.equal(done.stats.faults.distinctPages, 3);
    assert.ok(done.stats.faults.served >= 3 && done.stats.faults.inFlight >= 3);
    assert.ok(done.faultOrder.every((ref, i) => ref.page === wanted[i] && ref.blockId === "ram0"));
    assert.ok(Number.isFinite(done.stats.faults.faultServiceUs.p50));
  });

  void it("leaves zero pages to the destination, serves one when asked, sends all with sendZeroPages", async () => {
    const { fake, snapshot, server } = await setup();
    await server.prepared;
    server.markStarted();
    fake.request("ram0", 5); // a zero page (page % 5 === 0)
    const done = await server.done;
    assertComplete(fake, snapshot);
    assert.deepEqual(
      fake.pages.filter((page) => page.kind === "zero").map((page) => `${page.block}:${page.page}`),
      ["ram0:5"],
      "only the zero page asked for was sent",
    );
    assert.equal(done.stats.pagesWritten, DATA + 1);
    assert.equal(done.stats.pagesLeftZero, TOTAL - DATA - 1);

    const all = await setup({ tuning: { sendZeroPages: true } });
    const allDone = await all.server.done;
    assertComplete(all.fake, all.snapshot, BLOCKS, true);
    assert.equal(allDone.stats.pagesWritten, TOTAL);
    assert.equal(allDone.stats.pagesLeftZero, 0);
  });

  void it("keeps its queue bounded while the destination does not read", async () => {
    const { fake, server } = await setup({ tuning: { maxQueuedBytes: 64 * 1024 } });
    await server.prepared;
    fake.socket?.pause();
    await sleep(300);
    const stats = server.stats();
    const written = stats.bytesBeforeStart + stats.bytesAfterStart;
    const outstanding = written - fake.bytesReceived;
    // user-space bound + kernel socket buffers (~208 KiB by default) + one section
    assert.ok(outstanding < 64 * 1024 + 512 * 1024, `outstanding ${outstanding} bytes`);
    assert.ok(stats.pagesWritten < TOTAL, "it waits instead of queueing everything");
    fake.request("ram0", 2000);
    const before = fake.pages.length;
    fake.socket?.resume();
    await server.done;
    assert.ok(fake.seqOf("ram0", 2000) - before < 200, "the request jumped the rest of the background");
  });

  void it("records requests for pages already sent as in flight, with first-fault order", async () => {
    const { fake, server } = await setup();
    await server.prepared;
    await new Promise<void>((resolve) => {
      fake.onChunk = () => {
        if (!fake.has("ram0", 11)) return;
        fake.onChunk = undefined;
        fake.request("ram0", 11, 2);
        fake.request("pc.bios", 1);
        resolve();
      };
    });
    const done = await server.done;
    const ram0 = done.faults.filter((fault) => fault.blockId === "ram0");
    assert.ok(ram0.find((fault) => fault.page === 11)?.alreadySent);
    assert.deepEqual(
      done.faultOrder.map((ref) => `${ref.blockId}:${ref.page}`),
      ["ram0:11", "ram0:12", "pc.bios:1"],
    );
  });

  void it("sends every page even when the policy offers nothing or stale pages", async () => {
    const lazyPolicy: PagePolicy = {
      name: "stale",
      nextBatch: () => [0, 1, 2],
      onFault: () => undefined,
      onStart: () => undefined,
    };
    const { fake, snapshot, server } = await setup({ policy: lazyPolicy });
    await server.done;
    assertComplete(fake, snapshot);
  });

  void it("a pausing policy holds the background back, never a requested page", async () => {
    let paused = true;
    const address = new AddressOrderPolicy();
    const policy: PagePolicy = {
      name: "paused-until-told",
      nextBatch: (max, view) => (paused ? { pauseMs: 20 } : address.nextBatch(max, view)),
      onFault: () => undefined,
      onStart: () => undefined,
    };
    const { fake, snapshot, server } = await setup({ policy });
    await server.prepared;
    await sleep(100);
    assert.equal(fake.pages.length, 0, "no background page while paused");
    fake.request("ram0", 77);
    while (!fake.has("ram0", 77)) await sleep(5);
    assert.equal(fake.pages.length, 1);
    paused = false;
    await server.done;
    assertComplete(fake, snapshot);
  });

  /** A policy that sends nothing in the background until `go()`. */
  function pausedPolicy(): { policy: PagePolicy; go: () => void } {
    let paused = true;
    const address = new AddressOrderPolicy();
    return {
      policy: {
        name: "paused-until-told",
        nextBatch: (max, view) => (paused ? { pauseMs: 10 } : address.nextBatch(max, view)),
        onFault: () => undefined,
        onStart: () => undefined,
      },
      go: () => {
        paused = false;
      },
    };
  }

  void it("checks the rest of the image only once the VM runs (checkAllAfterStart)", async () => {
    for (const checkAllAfterStart of [true, false]) {
      const { policy, go } = pausedPolicy();
      const { fake, snapshot, server } = await setup({ policy, tuning: { checkAllAfterStart } });
      await server.prepared;
      await sleep(100);
      if (checkAllAfterStart) {
        assert.equal(snapshot.reads, 0, "no chunk checked ahead before the start");
        server.markStarted();
      }
      while (snapshot.reads === 0) await sleep(5);
      assert.equal(fake.pages.length, 0, "checked ahead, nothing sent");
      go();
      await server.done;
      assertComplete(fake, snapshot);
    }
  });

  void it("serves the working set's copies from memory, with no store read", async () => {
    const refs = [
      { blockId: "ram0", page: 1 },
      { blockId: "pc.bios", page: 5 },
      { blockId: "ram0", page: 5 },
      { blockId: "ram0", page: 1501 },
    ];
    const snapshot = await fakeSnapshot(BLOCKS);
    const fake = await FakeDestination.listen(snapshot.dir);
    const entry: (typeof open)[number] = { fake, snapshot };
    open.push(entry);
    const data = Buffer.concat(refs.map((ref) => snapshot.data(ref.blockId, ref.page)));
    const { policy, go } = pausedPolicy();
    const server = PageServer.start({
      vm: "vm1",
      socket: await fake.connect(),
      source: snapshot.source,
      prefetch: refs.slice(0, 3),
      copies: { refs, data },
      policy,
    });
    entry.server = server;
    await server.prepared;
    const early = fake.pages.filter((page) => !page.postcopy).map((page) => `${page.block}:${page.page}`);
    assert.deepEqual(early, ["ram0:1", "pc.bios:5"], "W0 from the copies; ram0:5 is a zero page, left");
    fake.request("ram0", 1501);
    while (!fake.has("ram0", 1501)) await sleep(5);
    assert.equal(snapshot.reads, 0, "W0 and a requested page with a copy: no chunk read");
    go();
    server.markStarted();
    await server.done;
    assertComplete(fake, snapshot);
  });

  void it("checks a requested page's chunk on the spot when the store can (checkChunkSync)", async () => {
    const { policy, go } = pausedPolicy();
    const { fake, snapshot, server } = await setup({ policy, syncCheck: true });
    await server.prepared;
    fake.request("ram0", 77);
    while (!fake.has("ram0", 77)) await sleep(5);
    assert.equal(snapshot.syncChecks, 1);
    assert.equal(snapshot.reads, 0, "no trip through the asynchronous reader");
    go();
    server.markStarted();
    await server.done;
    assertComplete(fake, snapshot);
  });

  void it("fails on a damaged chunk found by the on-the-spot check, sending nothing of it", async () => {
    const { policy } = pausedPolicy();
    const { fake, server } = await setup({
      policy,
      syncCheck: true,
      corrupt: (block, page) => block === "ram0" && page === 77,
    });
    await server.prepared;
    fake.request("ram0", 77);
    const failure = await rejection(server.done);
    assert.equal(failure.code, "SNAPSHOT_CORRUPT");
    assert.match(failure.message, /VM vm1: page 77 of RAM block ram0/);
    assert.ok(!fake.has("ram0", 77));
  });

  void it("works without raw files (every read through the checked reader)", async () => {
    const snapshot = await fakeSnapshot(BLOCKS, { withRawFiles: false });
    const fake = await FakeDestination.listen(snapshot.dir);
    open.push({ fake, snapshot });
    const server = PageServer.start({
      vm: "vm1",
      socket: await fake.connect(),
      source: snapshot.source,
      policy: new AddressOrderPolicy(),
    });
    await server.done;
    assertComplete(fake, snapshot);
  });

  void it("never sends a page of a damaged chunk: the restore fails naming the VM and file", async () => {
    const { fake, server } = await setup({ corrupt: (block, page) => block === "ram0" && page >= 1024 });
    const failure = await rejection(server.done);
    assert.equal(failure.code, "SNAPSHOT_CORRUPT");
    assert.match(failure.message, /VM vm1: .*ram0.*ram\/ram0\.raw/);
    assert.ok(!fake.pages.some((page) => page.block === "ram0" && page.page >= 1024 && page.kind === "data"));
  });

  void it("fails when the destination closes, with the VM named", async () => {
    const { fake, server } = await setup();
    await server.prepared;
    fake.socket?.destroy();
    const failure = await rejection(server.done);
    assert.equal(failure.code, "PAGE_SERVER_CLOSED");
    assert.match(failure.message, /^VM vm1: /);
  });

  void it("fails when the destination stalls", async () => {
    const { fake, server } = await setup({ tuning: { stallTimeoutMs: 200, maxQueuedBytes: 16 * 1024 } });
    await server.prepared;
    fake.socket?.pause();
    const failure = await rejection(server.done);
    assert.equal(failure.code, "PAGE_SERVER_STALLED");
  });

  void it("fails when the destination reports an error, or asks for a page that does not exist", async () => {
    const shut = await setup();
    await shut.server.prepared;
    shut.fake.send({ type: "shut", error: 1 });
    assert.equal((await rejection(shut.server.done)).code, "PAGE_SERVER_DEST_FAILED");
    const bad = await setup();
    await bad.server.prepared;
    bad.fake.request("ram0", 5000);
    assert.equal((await rejection(bad.server.done)).code, "PAGE_SERVER_PROTOCOL");
  });

  void it("fails prepared when the device state never loads", async () => {
    const { fake, server } = await setup({ tuning: { preparedTimeoutMs: 150 } });
    fake.socket?.pause();
    const failure = await rejection(server.prepared);
    assert.ok(["PAGE_SERVER_TIMEOUT", "PAGE_SERVER_STALLED"].includes(failure.code), failure.code);
    assert.equal((await rejection(server.done)).code, failure.code);
  });

  void it("counts pages before and after start", async () => {
    const { fake, server } = await setup({ tuning: { maxQueuedBytes: 8 * 1024 } });
    await server.prepared;
    fake.socket?.pause();
    await sleep(50);
    server.markStarted();
    fake.socket?.resume();
    const done = await server.done;
    assert.ok(done.stats.pagesAfterStart > 0 && done.stats.pagesBeforeStart > 0);
    assert.equal(done.stats.pagesBeforeStart + done.stats.pagesAfterStart, DATA);
    assert.ok(done.stats.startedAtUs !== undefined && done.stats.doneAtUs! >= done.stats.startedAtUs);
  });
});
