import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  encodePackaged,
  encodePing,
  encodePostcopyListen,
  encodePostcopyRun,
} from "../../../src/migration/commands.ts";
import { encodeConfiguration } from "../../../src/migration/configuration.ts";
import { encodeEof, encodeHeader, encodeRamSection, encodeRamStart } from "../../../src/migration/encode.ts";
import { Command } from "../../../src/migration/format.ts";
import { MigrationStreamReader } from "../../../src/migration/reader.ts";
import type { MigrationEvent, PageEvent } from "../../../src/migration/types.ts";
import {
  BLOCKS,
  CONFIGURATION,
  RAM_SECTION_ID,
  buildStream,
  deviceState,
  pageData,
  randomChunks,
  readAll,
  samplePages,
  splitAt,
  REAL_PREFIX,
  summarize,
} from "./fixtures.ts";

function types(events: MigrationEvent[]): string[] {
  return events.map((event) => event.type);
}

function pages(events: MigrationEvent[]): PageEvent[] {
  return events.filter((event): event is PageEvent => event.type === "page");
}

void describe("MigrationStreamReader", () => {
  void it("reads the header, configuration subsections and a GPA block list as QEMU 7.2 wrote them", () => {
    const reader = new MigrationStreamReader();
    const events = reader.push(REAL_PREFIX);
    assert.deepEqual(types(events), ["header", "configuration"]);
    const config = events[1];
    assert.equal(config?.type, "configuration");
    if (config?.type !== "configuration") return;
    assert.equal(config.machine, "pc-i440fx-7.2");
    assert.deepEqual(config.capabilities, ["x-ignore-shared"]);
    assert.equal(config.raw.length, 8 + 5 + 13 + 2 + 26 + 4 + 4 + 16 - 8);
    assert.ok(REAL_PREFIX.subarray(8).subarray(0, config.raw.length).equals(config.raw));
    // The block list needs the remaining blocks: the reader waits, then sees the end too early.
    assert.throws(() => reader.end(), { code: "MIGRATION_TRUNCATED" });
  });

  void it("reads a synthetic precopy stream: blocks, pages, sections, device state, vmdesc", () => {
    const sample = samplePages(12);
    const stream = buildStream({ pages: sample, pagesPerPart: 5 });
    const events = readAll([stream]);
    assert.deepEqual(
      types(events).filter((type) => type !== "page"),
      [
        "header",
        "configuration",
        "ramBlocks",
        "ramSection",
        "ramSection",
        "ramSection",
        "ramSection",
        "deviceState",
        "eof",
        "vmdesc",
      ],
    );
    const got = pages(events);
    assert.equal(got.length, sample.length);
    got.forEach((page, i) => {
      const want = sample[i]!;
      assert.equal(page.block, want.block);
      assert.equal(page.offset, want.offset);
      assert.equal(page.kind, want.zero ? "zero" : "data");
      if (!want.zero) assert.ok(page.data?.equals(want.data!));
    });
    const blocks = events.find((event) => event.type === "ramBlocks");
    assert.ok(blocks?.type === "ramBlocks");
    assert.deepEqual(blocks.blocks, BLOCKS);
    assert.equal(blocks.totalBytes, 18 * 4096);
    assert.ok(blocks.raw.equals(encodeRamStart({ sectionId: RAM_SECTION_ID, blocks: BLOCKS })));
    const state = events.find((event) => event.type === "deviceState");
    assert.ok(state?.type === "deviceState" && state.raw.equals(deviceState().raw));
    const sections = events.filter((event) => event.type === "ramSection");
    assert.deepEqual(
      sections.map((event) => [event.kind, event.pages]),
      [
        ["part", 5],
        ["part", 5],
        ["part", 2],
        ["end", 0],
      ],
    );
  });

  void it("gives the same events whatever the chunking: every split point of a small stream", () => {
    const tiny = [
      { block: "pc.ram", offset: 4096, data: pageData(5) },
      { block: "pc.ram", offset: 8192, zero: true },
      { block: "/rom@etc/acpi/tables", offset: 0, zero: true },
    ];
    const stream = buildStream({ pages: tiny, pagesPerPart: 2 });
    const whole = summarize(readAll([stream]));
    for (let at = 0; at <= stream.length; at += 1) {
      assert.deepEqual(summarize(readAll(splitAt(stream, at))), whole, `split at ${at}`);
    }
  });

  void it("gives the same events for random chunkings of a larger stream, down to 1-byte chunks", () => {
    const stream = buildStream({ pages: samplePages(60, 9), pagesPerPart: 7 });
    const whole = summarize(readAll([stream]));
    for (const [seed, max] of [
      [1, 1],
      [2, 3],
      [3, 17],
      [4, 700],
      [5, 5000],
      [6, 70000],
    ] as const) {
      assert.deepEqual(summarize(readAll(randomChunks(stream, seed, max))), whole, `seed ${seed}`);
    }
  });

  void it("reads a background-snapshot layout (no ram END) and a stream without VMDESCRIPTION", () => {
    const noEnd = readAll([buildStream({ withEnd: false })]);
    assert.ok(!noEnd.some((event) => event.type === "ramSection" && event.kind === "end"));
    assert.deepEqual(types(noEnd).slice(-3), ["deviceState", "eof", "vmdesc"]);
    const noDesc = readAll([buildStream({ withVmdesc: false })]);
    assert.deepEqual(types(noDesc).slice(-2), ["deviceState", "eof"]);
  });

  void it("reads commands, PACKAGED payloads and an EOF without device state (post-copy shape)", () => {
    const packaged = Buffer.concat([
      encodePostcopyListen(),
      deviceState().raw,
      encodePing(3),
      encodePostcopyRun(),
    ]);
    const stream = Buffer.concat([
      encodeHeader(),
      CONFIGURATION,
      encodePing(1),
      encodeRamStart({ sectionId: RAM_SECTION_ID, blocks: BLOCKS }),
      encodePackaged(packaged),
      encodeRamSection("end", RAM_SECTION_ID, samplePages(3)),
      encodeEof(),
    ]);
    const events = readAll(randomChunks(stream, 7, 9));
    assert.deepEqual(
      types(events).filter((type) => type !== "page"),
      ["header", "configuration", "command", "ramBlocks", "packaged", "ramSection", "eof"],
    );
    const ping = events[2];
    assert.ok(ping?.type === "command" && ping.cmd === Command.PING && ping.data.readUInt32BE(0) === 1);
    const pkg = events.find((event) => event.type === "packaged");
    assert.ok(pkg?.type === "packaged" && pkg.data.equals(packaged));
  });

  void it("reads the page size of hugepage blocks when told postcopy-ram was on", () => {
    const blocks = [
      { id: "pc.ram", usedLength: 512 * 4096, pageSize: 2 * 1024 * 1024 },
      { id: "pc.rom", usedLength: 4096 },
    ];
    const stream = buildStream({ blocks, pages: [{ block: "pc.rom", offset: 0, zero: true }] });
    const events = readAll([stream], { postcopyRam: true, blockPageSizes: { "pc.ram": 2 * 1024 * 1024 } });
    const start = events.find((event) => event.type === "ramBlocks");
    assert.ok(start?.type === "ramBlocks");
    assert.deepEqual(start.blocks, blocks);
  });

  void it("reads GPAs when the configuration says x-ignore-shared, and when told so", () => {
    const blocks = [
      { id: "mem", usedLength: 4096, gpa: 0 },
      { id: "pc.bios", usedLength: 4096, gpa: 0xfffc0000 },
    ];
    const withCap = encodeConfiguration({ machine: "pc-i440fx-7.2", capabilities: ["x-ignore-shared"] });
    const fromConfig = readAll([buildStream({ blocks, configuration: withCap, pages: [] })]);
    assert.deepEqual(fromConfig.find((event) => event.type === "ramBlocks")?.blocks, blocks);
    const fromOption = readAll([buildStream({ blocks, pages: [] })], { ignoreShared: true });
    assert.deepEqual(fromOption.find((event) => event.type === "ramBlocks")?.blocks, blocks);
  });

  void it("parses target-page-bits and uuid subsections", () => {
    const uuid = Buffer.from("00112233445566778899aabbccddeeff", "hex");
    const raw = encodeConfiguration({ machine: "m", targetPageBits: 12, capabilities: ["a", "bc"], uuid });
    const events = readAll([buildStream({ configuration: raw })]);
    const config = events.find((event) => event.type === "configuration");
    assert.ok(config?.type === "configuration");
    assert.equal(config.targetPageBits, 12);
    assert.deepEqual(config.capabilities, ["a", "bc"]);
    assert.ok(config.uuid?.equals(uuid));
    assert.ok(config.raw.equals(raw));
  });

  // Found while fuzzing the parsers (issue 7): the configuration was measured from its start at
  // every push, peeking chunk by chunk, so a 16 KiB record arriving a byte at a time took 4 minutes.
  void it("reads a 64 KiB configuration arriving one byte at a time without rescanning it", () => {
    const pageBits = encodeConfiguration({ machine: "m", targetPageBits: 12, capabilities: [] });
    const subsection = pageBits.subarray(6);
    const count = Math.floor((64 * 1024 - 6) / subsection.length);
    const raw = Buffer.concat([pageBits.subarray(0, 6), ...Array.from({ length: count }, () => subsection)]);
    const stream = Buffer.concat([encodeHeader(), raw, encodeEof()]);
    const reader = new MigrationStreamReader();
    const events: MigrationEvent[] = [];
    const started = performance.now();
    for (let at = 0; at < stream.length; at += 1) {
      events.push(...reader.push(stream.subarray(at, at + 1)));
      // Checked as it goes: a regression would otherwise block the test runner for hours.
      if (at % 1024 === 0) assert.ok(performance.now() - started < 10_000, `still at byte ${at} after 10 s`);
    }
    events.push(...reader.end());
    const config = events.find((event) => event.type === "configuration");
    assert.ok(config?.type === "configuration" && config.raw.equals(raw));
    assert.deepEqual(types(events), ["header", "configuration", "eof"]);
  });

  void it("copies page data: later pushes do not change emitted pages", () => {
    const stream = Buffer.from(buildStream());
    const reader = new MigrationStreamReader();
    const events = reader.push(stream);
    const first = pages(events).find((page) => page.kind === "data")!;
    const copy = Buffer.from(first.data!);
    stream.fill(0);
    assert.ok(first.data!.equals(copy));
  });
});
