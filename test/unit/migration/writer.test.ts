import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { setImmediate as tick } from "node:timers/promises";
import { describe, it } from "node:test";
import { encodeRamSection, encodeRamStart } from "../../../src/migration/encode.ts";
import type { MigrationEvent, PageRecord } from "../../../src/migration/types.ts";
import { writePrecopyStream } from "../../../src/migration/writer.ts";
import { isHrError } from "../../../src/util/errors.ts";
import {
  BLOCKS,
  CONFIGURATION,
  RAM_SECTION_ID,
  buildStream,
  deviceState,
  readAll,
  samplePages,
  summarize,
} from "./fixtures.ts";

/** The ram START and first PART bytes QEMU 7.2.22 wrote for a `-m 64 -S` guest (real capture). */
const REAL_START =
  "01000000020372616d000000000000000400000000040820040670632e72616d0000000004000000142f726f6d406574632f61637069" +
  "2f7461626c657300000000000200000770632e62696f7300000000000400000670632e726f6d0000000000020000152f726f6d406574" +
  "632f7461626c652d6c6f616465720000000000001000122f726f6d406574632f616370692f72736470000000000000100000000000" +
  "000000107e00000002";
const REAL_PART_PREFIX = "020000000200000000000000020670632e72616d000000000000001022000000000000002022";

/** A Writable that keeps what it gets, with a tiny buffer so that backpressure happens. */
class Collector extends Writable {
  readonly chunks: Buffer[] = [];
  drains = 0;
  constructor(private readonly failAfter = Infinity) {
    super({ highWaterMark: 512 });
    this.on("drain", () => (this.drains += 1));
  }
  /** The most bytes seen queued in the stream when a write came. */
  maxQueued = 0;
  override _write(chunk: Buffer, _encoding: string, done: (error?: Error) => void): void {
    this.maxQueued = Math.max(this.maxQueued, this.writableLength);
    this.chunks.push(chunk);
    const total = this.chunks.reduce((sum, part) => sum + part.length, 0);
    setImmediate(() => done(total > this.failAfter ? new Error("disk full") : undefined));
  }
  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

function inputFrom(events: MigrationEvent[]): Parameters<typeof writePrecopyStream>[1] {
  const find = <T extends MigrationEvent["type"]>(type: T) =>
    events.find((event): event is Extract<MigrationEvent, { type: T }> => event.type === type)!;
  const pages: PageRecord[] = events.flatMap((event) =>
    event.type === "page"
      ? [
          event.kind === "zero"
            ? { block: event.block, offset: event.offset, zero: true }
            : { block: event.block, offset: event.offset, data: event.data! },
        ]
      : [],
  );
  return {
    configuration: find("configuration").raw,
    ramStart: find("ramBlocks"),
    pages,
    deviceState: find("deviceState").raw,
    vmdesc: find("vmdesc").raw,
  };
}

void describe("writePrecopyStream", () => {
  void it("encodes the ram START and page records exactly as QEMU 7.2 does", () => {
    const blocks = [
      { id: "pc.ram", usedLength: 0x4000000 },
      { id: "/rom@etc/acpi/tables", usedLength: 0x20000 },
      { id: "pc.bios", usedLength: 0x40000 },
      { id: "pc.rom", usedLength: 0x20000 },
      { id: "/rom@etc/table-loader", usedLength: 0x1000 },
      { id: "/rom@etc/acpi/rsdp", usedLength: 0x1000 },
    ];
    assert.equal(encodeRamStart({ sectionId: 2, blocks }).toString("hex"), REAL_START);
    const part = encodeRamSection(
      "part",
      2,
      [0, 4096, 8192].map((offset) => ({ block: "pc.ram", offset, zero: true })),
    );
    assert.ok(part.toString("hex").startsWith(REAL_PART_PREFIX));
  });

  void it("writes byte for byte the stream it read (reader → writer), with backpressure", async () => {
    const original = buildStream({ pages: samplePages(40, 3), pagesPerPart: 16 });
    const sink = new Collector();
    const stats = await writePrecopyStream(sink, {
      ...inputFrom(readAll([original])),
      maxPagesPerPart: 16,
      aheadBytes: 0,
    });
    assert.ok(sink.bytes.equals(original));
    assert.equal(stats.bytes, original.length);
    assert.deepEqual([stats.pages, stats.parts], [40, 3]);
    assert.equal(stats.zeroPages, samplePages(40, 3).filter((page) => page.zero).length);
    assert.ok(sink.drains > 0, "the writer waited for drain");
    assert.ok(sink.writableFinished);
  });

  void it("with aheadBytes, keeps writing while the sink's queue is under it and waits above it", async () => {
    const original = buildStream({ pages: samplePages(40, 3), pagesPerPart: 16 });
    const sink = new Collector();
    // 16-page parts are ~64 KiB: the queue may hold two before the writer waits
    const stats = await writePrecopyStream(sink, {
      ...inputFrom(readAll([original])),
      maxPagesPerPart: 16,
      aheadBytes: 140 * 1024,
    });
    assert.ok(sink.bytes.equals(original));
    assert.equal(stats.bytes, original.length);
    assert.ok(sink.maxQueued <= 140 * 1024 + 70 * 1024, `queued at most ${sink.maxQueued} bytes`);
  });

  void it("a sink that fails while the writer runs ahead rejects with MIGRATION_WRITE_FAILED", async () => {
    const original = buildStream({ pages: samplePages(200, 3), pagesPerPart: 16 });
    const sink = new Collector(100_000);
    await assert.rejects(
      writePrecopyStream(sink, { ...inputFrom(readAll([original])), maxPagesPerPart: 16 }),
      (error) => isHrError(error, "MIGRATION_WRITE_FAILED"),
    );
  });

  void it("writes the same bytes from batches of pages as from single pages", async () => {
    const original = buildStream({ pages: samplePages(40, 3), pagesPerPart: 16 });
    const input = inputFrom(readAll([original]));
    const single = [...(input.pages as Iterable<PageRecord>)];
    // uneven batches, an empty one included, across part boundaries
    const batches = [single.slice(0, 7), [], single.slice(7, 16), single.slice(16, 33), single.slice(33)];
    const sink = new Collector();
    const stats = await writePrecopyStream(sink, { ...input, pages: batches, maxPagesPerPart: 16 });
    assert.ok(sink.bytes.equals(original));
    assert.deepEqual([stats.pages, stats.parts], [40, 3]);
  });

  void it("round-trips writer → reader with pages from an async iterable, default part size", async () => {
    const sample = samplePages(2100, 5);
    async function* slowly(): AsyncGenerator<PageRecord> {
      for (const [i, page] of sample.entries()) {
        if (i % 500 === 0) await tick();
        yield page;
      }
    }
    const state = deviceState();
    const sink = new Collector();
    const stats = await writePrecopyStream(sink, {
      configuration: CONFIGURATION,
      ramStart: { sectionId: RAM_SECTION_ID, blocks: BLOCKS },
      pages: slowly(),
      deviceState: state.raw,
    });
    assert.equal(stats.parts, 2);
    const events = readAll([sink.bytes]);
    const pages = events.filter((event) => event.type === "page");
    assert.equal(pages.length, sample.length);
    assert.deepEqual(
      summarize(pages),
      summarize(
        sample.map((page) =>
          page.zero
            ? { type: "page", block: page.block, offset: page.offset, kind: "zero", fill: 0 }
            : {
                type: "page",
                block: page.block,
                offset: page.offset,
                kind: "data",
                data: page.data,
                fill: 0,
              },
        ) as MigrationEvent[],
      ),
    );
    assert.deepEqual(
      events.slice(-2).map((event) => event.type),
      ["deviceState", "eof"],
    );
  });

  void it("refuses pages it cannot encode with MIGRATION_BAD_INPUT", async () => {
    const base = {
      configuration: CONFIGURATION,
      ramStart: { sectionId: 2, blocks: BLOCKS },
      deviceState: deviceState().raw,
    };
    for (const page of [
      { block: "pc.ram", offset: 0, data: Buffer.alloc(100) },
      { block: "pc.ram", offset: 100, zero: true },
      { block: "nope", offset: 0, zero: true },
      { block: "pc.ram", offset: 16 * 4096, zero: true },
    ]) {
      await assert.rejects(
        writePrecopyStream(new Collector(), { ...base, pages: [page] }),
        (error: unknown) => isHrError(error, "MIGRATION_BAD_INPUT"),
      );
    }
  });

  void it("turns a failing or closed sink into MIGRATION_WRITE_FAILED instead of hanging", async () => {
    const input = inputFrom(readAll([buildStream({ pages: samplePages(30, 2) })]));
    await assert.rejects(writePrecopyStream(new Collector(20_000), input), (error: unknown) =>
      isHrError(error, "MIGRATION_WRITE_FAILED"),
    );
    const closed = new Collector();
    closed.destroy();
    await assert.rejects(writePrecopyStream(closed, input), (error: unknown) =>
      isHrError(error, "MIGRATION_WRITE_FAILED"),
    );
    const slow = new Collector();
    setTimeout(() => slow.destroy(), 5);
    async function* forever(): AsyncGenerator<PageRecord> {
      for (let i = 0; ; i += 1) {
        await tick();
        yield { block: "pc.ram", offset: (i % 16) * 4096, data: Buffer.alloc(4096, i) };
      }
    }
    await assert.rejects(
      writePrecopyStream(slow, { ...input, pages: forever(), maxPagesPerPart: 4 }),
      (error: unknown) => isHrError(error, "MIGRATION_WRITE_FAILED"),
    );
  });
});
