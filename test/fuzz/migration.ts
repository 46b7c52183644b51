/**
 * Fuzz targets of the QEMU migration stream (src/migration): the stream reader (fed whole and in
 * random chunks, which must agree), what consumers do with its events (decodeCommand,
 * splitDeviceSections), and the return-path decoder.
 *
 * Seeds are streams of the three shapes QEMU 7.2 writes (precopy, background snapshot, post-copy),
 * built from the encoders with every length field recorded, plus the first bytes of a stream
 * written by a real QEMU 7.2.22 (the same bytes as test/unit/migration/reader.test.ts).
 */
import fc from "fast-check";
import { decodeCommand } from "../../src/migration/commands.ts";
import { splitDeviceSections } from "../../src/migration/device-sections.ts";
import { encodeEof, encodeFooter, encodeHeader, encodeVmdesc, u64 } from "../../src/migration/encode.ts";
import { Command, RamFlag, Section } from "../../src/migration/format.ts";
import { MigrationStreamReader, type ReaderOptions } from "../../src/migration/reader.ts";
import {
  ReturnPathDecoder,
  encodeReturnPathMessage,
  type ReturnPathMessage,
} from "../../src/migration/return-path.ts";
import type { MigrationEvent, RamBlockInfo, Vmdesc } from "../../src/migration/types.ts";
import {
  DEVICES,
  pageData,
  REAL_PREFIX as REAL_PREFIX_BYTES,
  vmdescDevice,
  type DeviceSpec,
} from "../unit/migration/fixtures.ts";
import {
  check,
  defineTarget,
  FuzzFailure,
  OK,
  throwsSame,
  typedOutcome,
  type FuzzTarget,
  type Outcome,
} from "./harness.ts";
import {
  be,
  chunked,
  chunksOf,
  fuzzBytes,
  SeedBuilder,
  type Chunked,
  type LengthField,
  type Seed,
  withHugeLengths,
} from "./mutate.ts";

const MIGRATION_RULE = {
  codes: ["MIGRATION_BAD_STREAM", "MIGRATION_TRUNCATED", "MIGRATION_UNSUPPORTED", "MIGRATION_TOO_LARGE"],
  // The reader's catch-all turns any other exception into "reader failure: ..."; the return-path
  // decoder's puts the exception's message after "bad migration stream at byte N: ".
  maskedCrash:
    /reader failure|out of range|outside buffer bounds|Cannot read prop|is not a function|is not iterable|peekByte\(|peek\(|consume\(|unreachable/,
};

const RAM_ID = 2;
const BLOCKS: RamBlockInfo[] = [
  { id: "pc.ram", usedLength: 16 * 4096 },
  { id: "/rom@etc/acpi/tables", usedLength: 2 * 4096 },
];
const GPA_BLOCKS: RamBlockInfo[] = [
  { id: "mem", usedLength: 8 * 4096, gpa: 0 },
  { id: "pc.bios", usedLength: 4096, gpa: 0xfffc0000 },
];

/**
 * Header, configuration and the ram START up to its first block, as QEMU 7.2.22 wrote them
 * (x-ignore-shared on, so the block carries its GPA), and the offsets of their length fields.
 */
const REAL_PREFIX: Seed = {
  bytes: REAL_PREFIX_BYTES,
  fields: [
    be(9, 4),
    be(27, 1),
    be(58, 4),
    be(62, 1),
    be(79, 4),
    be(83, 1),
    be(95, 8),
    be(103, 1),
    be(107, 8),
  ],
};

function sum(values: readonly number[]): number {
  return values.reduce((total, value) => total + value, 0);
}

function u8(value: number): Buffer {
  return Buffer.from([value]);
}

function u32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value >>> 0, 0);
  return out;
}

/** A 05 subsection; `payloadFields` are offsets within the payload. */
function subsection(seed: SeedBuilder, name: string, payload: Buffer, ...payloadFields: LengthField[]): void {
  const nameBytes = Buffer.from(name, "latin1");
  seed.add(Buffer.concat([u8(Section.SUBSECTION), u8(nameBytes.length)]), be(1, 1));
  seed.add(Buffer.concat([nameBytes, u32(1)]));
  seed.add(payload, ...payloadFields);
}

function configuration(
  seed: SeedBuilder,
  options: { capabilities?: string[]; pageBits?: number; uuid?: boolean } = {},
): void {
  const machine = Buffer.from("pc-i440fx-7.2", "latin1");
  seed.add(Buffer.concat([u8(Section.CONFIGURATION), u32(machine.length), machine]), be(1, 4));
  if (options.pageBits !== undefined) {
    subsection(seed, "configuration/target-page-bits", u32(options.pageBits));
  }
  const capabilities = options.capabilities ?? [];
  if (capabilities.length > 0) {
    subsection(seed, "configuration/capabilities", u32(capabilities.length), be(0, 4));
    for (const name of capabilities) {
      const bytes = Buffer.from(name, "latin1");
      seed.add(Buffer.concat([u8(bytes.length), bytes]), be(0, 1));
    }
  }
  if (options.uuid === true) subsection(seed, "configuration/uuid", Buffer.alloc(16, 0x42));
}

function ramStart(seed: SeedBuilder, blocks: readonly RamBlockInfo[]): void {
  const idstr = Buffer.from("ram", "latin1");
  seed.add(
    Buffer.concat([u8(Section.START), u32(RAM_ID), u8(idstr.length), idstr, u32(0), u32(4)]),
    be(1, 4),
    be(5, 1),
  );
  const total = blocks.reduce((sum, block) => sum + block.usedLength, 0);
  seed.add(u64(total + RamFlag.MEM_SIZE), be(0, 8));
  for (const block of blocks) {
    const id = Buffer.from(block.id, "latin1");
    seed.add(Buffer.concat([u8(id.length), id, u64(block.usedLength)]), be(0, 1), be(1 + id.length, 8));
    if (block.pageSize !== undefined) seed.add(u64(block.pageSize), be(0, 8));
    if (block.gpa !== undefined) seed.add(u64(block.gpa), be(0, 8));
  }
  seed.add(Buffer.concat([u64(RamFlag.EOS), encodeFooter(RAM_ID)]), be(9, 4));
}

interface Page {
  block: string;
  offset: number;
  zero: boolean;
}

function ramSection(seed: SeedBuilder, kind: "part" | "end", pages: readonly Page[]): void {
  seed.add(Buffer.concat([u8(kind === "end" ? Section.END : Section.PART), u32(RAM_ID)]), be(1, 4));
  let previous: string | undefined;
  pages.forEach((page, i) => {
    const continues = page.block === previous;
    const flags = (page.zero ? RamFlag.ZERO : RamFlag.PAGE) | (continues ? RamFlag.CONTINUE : 0);
    seed.add(u64(page.offset + flags), be(0, 8));
    if (!continues) {
      const id = Buffer.from(page.block, "latin1");
      seed.add(Buffer.concat([u8(id.length), id]), be(0, 1));
    }
    seed.add(page.zero ? u8(0) : pageData(i + 1));
    previous = page.block;
  });
  seed.add(Buffer.concat([u64(RamFlag.EOS), encodeFooter(RAM_ID)]), be(9, 4));
}

/** A 08 command; `dataFields` are offsets within `data`. */
function command(
  seed: SeedBuilder,
  cmd: number,
  data: Buffer = Buffer.alloc(0),
  ...dataFields: LengthField[]
): void {
  const head = Buffer.concat([u8(Section.COMMAND), Buffer.alloc(4)]);
  head.writeUInt16BE(cmd, 1);
  head.writeUInt16BE(data.length, 3);
  seed.add(head, be(1, 2), be(3, 2));
  seed.add(data, ...dataFields);
}

/** FULL sections for `devices` (like fixtures.deviceState), and the VMDESCRIPTION describing them. */
function deviceState(seed: SeedBuilder, devices: readonly DeviceSpec[] = DEVICES): Vmdesc {
  const vmdesc: Vmdesc = { page_size: 4096, devices: [] };
  devices.forEach((device, index) => {
    const sectionId = 3 + index;
    const name = Buffer.from(device.name, "latin1");
    seed.add(
      Buffer.concat([
        u8(Section.FULL),
        u32(sectionId),
        u8(name.length),
        name,
        u32(device.instanceId),
        u32(1),
      ]),
      be(1, 4),
      be(5, 1),
    );
    for (const size of device.fieldSizes) seed.add(Buffer.alloc(size, 0xa5));
    for (const sub of device.subsections ?? [])
      subsection(seed, sub.name, Buffer.alloc(sum(sub.fieldSizes), 0x5a));
    seed.add(encodeFooter(sectionId), be(1, 4));
    vmdesc.devices.push(vmdescDevice(device));
  });
  return vmdesc;
}

const PAGES: Page[] = [
  { block: "pc.ram", offset: 0, zero: false },
  { block: "pc.ram", offset: 4096, zero: true },
  { block: "/rom@etc/acpi/tables", offset: 4096, zero: true },
  { block: "pc.ram", offset: 15 * 4096, zero: true },
  { block: "pc.ram", offset: 8192, zero: true },
];

function precopy(withEnd: boolean, withVmdesc: boolean): Seed {
  const seed = new SeedBuilder().add(encodeHeader(), be(4, 4));
  configuration(seed);
  ramStart(seed, BLOCKS);
  ramSection(seed, "part", PAGES.slice(0, 3));
  ramSection(seed, "part", PAGES.slice(3));
  if (withEnd) ramSection(seed, "end", []);
  const vmdesc = deviceState(seed);
  seed.add(encodeEof());
  if (withVmdesc) seed.add(encodeVmdesc(vmdesc), be(1, 4));
  return seed.build();
}

function postcopy(): Seed {
  const seed = new SeedBuilder().add(encodeHeader());
  configuration(seed, { pageBits: 12, uuid: true });
  command(seed, Command.OPEN_RETURN_PATH);
  command(seed, Command.PING, u32(1));
  command(seed, Command.POSTCOPY_ADVISE, Buffer.concat([u64(4096), u64(4096)]));
  ramStart(seed, BLOCKS);
  const block = Buffer.from("pc.ram", "latin1");
  const ranges = [u64(4096), u64(8192), u64(0), u64(4096)];
  const discard = Buffer.concat([u8(0), u8(block.length), block, u8(0), ...ranges]);
  command(seed, Command.POSTCOPY_RAM_DISCARD, discard, be(1, 1), be(3 + block.length, 8));
  const packaged = new SeedBuilder();
  command(packaged, Command.POSTCOPY_LISTEN);
  deviceState(packaged, DEVICES.slice(0, 2));
  command(packaged, Command.PING, u32(3));
  command(packaged, Command.POSTCOPY_RUN);
  const inner = packaged.build();
  command(seed, Command.PACKAGED, u32(inner.bytes.length), be(0, 4));
  seed.add(inner.bytes, ...inner.fields);
  ramSection(seed, "part", PAGES.slice(1, 4));
  ramSection(seed, "end", []);
  seed.add(encodeEof());
  return seed.build();
}

function ignoreShared(): Seed {
  const seed = new SeedBuilder().add(encodeHeader());
  configuration(seed, { capabilities: ["x-ignore-shared"] });
  ramStart(seed, GPA_BLOCKS);
  ramSection(seed, "end", [
    { block: "mem", offset: 0, zero: true },
    { block: "pc.bios", offset: 0, zero: false },
  ]);
  const vmdesc = deviceState(seed, DEVICES.slice(2));
  seed.add(encodeEof(), be(0, 1));
  seed.add(encodeVmdesc(vmdesc), be(1, 4));
  return seed.build();
}

/**
 * A configuration of 200 subsections (QEMU writes at most 3; this is 8 KiB): fed in small chunks,
 * it catches a reader that rescans the record at every chunk.
 */
function manySubsections(): Seed {
  const seed = new SeedBuilder().add(encodeHeader());
  configuration(seed, { capabilities: ["x-ignore-shared", "validate-uuid"] });
  for (let i = 0; i < 200; i += 1) subsection(seed, "configuration/target-page-bits", u32(12));
  ramStart(seed, GPA_BLOCKS);
  seed.add(encodeEof());
  return seed.build();
}

export const MIGRATION_SEEDS: readonly Seed[] = [
  manySubsections(),
  precopy(true, true),
  precopy(false, true),
  precopy(true, false),
  postcopy(),
  ignoreShared(),
  REAL_PREFIX,
];

/** A stream whose VMDESCRIPTION devices are arbitrary JSON (what splitDeviceSections gets). */
const oddVmdesc: fc.Arbitrary<Buffer> = fc
  .array(
    fc.oneof(
      fc.jsonValue({ maxDepth: 3 }),
      fc.record({ name: fc.string({ maxLength: 8 }), instance_id: fc.jsonValue({ maxDepth: 1 }) }),
      fc.record({
        name: fc.constantFrom(...DEVICES.map((device) => device.name)),
        instance_id: fc.constant(0),
        fields: fc.jsonValue({ maxDepth: 2 }),
        subsections: fc.jsonValue({ maxDepth: 3 }),
      }),
    ),
    { maxLength: 5 },
  )
  .map((devices) => {
    const seed = new SeedBuilder().add(encodeHeader());
    configuration(seed);
    deviceState(seed);
    seed.add(encodeEof()).add(encodeVmdesc({ page_size: 4096, devices }));
    return seed.build().bytes;
  });

const readerOptions: fc.Arbitrary<ReaderOptions> = fc.record(
  {
    ignoreShared: fc.boolean(),
    postcopyRam: fc.boolean(),
    hostPageSize: fc.constantFrom(4096, 2 * 1024 * 1024),
    blockPageSizes: fc.constant({ "pc.ram": 2 * 1024 * 1024 }),
  },
  { requiredKeys: [] },
);

interface ReadResult {
  outcome: Outcome;
  events: MigrationEvent[];
}

function read(chunks: readonly Buffer[], options: ReaderOptions): ReadResult {
  const reader = new MigrationStreamReader(options);
  const events: MigrationEvent[] = [];
  try {
    for (const chunk of chunks) events.push(...reader.push(chunk));
    events.push(...reader.end());
  } catch (error) {
    const outcome = typedOutcome(error, MIGRATION_RULE);
    check(
      throwsSame(() => reader.push(Buffer.alloc(1)), error),
      "a failed reader accepted more input",
    );
    return { outcome, events };
  }
  return { outcome: OK, events };
}

/** Event types and sizes, to compare two readings of the same bytes. */
function summary(events: readonly MigrationEvent[]): string {
  return events
    .map((event) => {
      switch (event.type) {
        case "page":
          return `page:${event.block}:${event.offset}:${event.kind}:${event.data?.length ?? event.fill}`;
        case "deviceState":
        case "configuration":
        case "ramBlocks":
        case "vmdesc":
          return `${event.type}:${event.raw.length}`;
        case "command":
        case "packaged":
          return `${event.type}:${event.data.length}`;
        default:
          return event.type;
      }
    })
    .join(" ");
}

/** What the consumers of the events do with them: decode commands, cut the device state. */
function consume(events: readonly MigrationEvent[]): Outcome {
  try {
    let deviceState: Buffer | undefined;
    for (const event of events) {
      if (event.type === "command") decodeCommand(event.cmd, event.data);
      if (event.type === "deviceState") deviceState = event.raw;
      if (event.type === "vmdesc" && deviceState !== undefined) splitDeviceSections(deviceState, event.json);
    }
    return OK;
  } catch (error) {
    return typedOutcome(error, { codes: ["MIGRATION_BAD_STREAM"], maskedCrash: MIGRATION_RULE.maskedCrash });
  }
}

function runReader(input: { stream: Chunked; options: ReaderOptions }): Outcome {
  const whole = read([input.stream.bytes], input.options);
  const split = read(chunksOf(input.stream), input.options);
  if (whole.outcome !== split.outcome) {
    throw new FuzzFailure(
      `whole input gave ${whole.outcome}, the same bytes in chunks gave ${split.outcome}`,
    );
  }
  if (whole.outcome !== OK) return whole.outcome;
  const [a, b] = [summary(whole.events), summary(split.events)];
  if (a !== b) throw new FuzzFailure(`chunking changed the events:\n  whole: ${a}\n  split: ${b}`);
  return consume(whole.events);
}

const RETURN_PATH_MESSAGES: ReturnPathMessage[] = [
  { type: "pong", value: 1 },
  { type: "reqPages", block: "pc.ram", start: 0x2bc6000, length: 4096, withId: true },
  { type: "reqPages", block: "pc.ram", start: 0x2bc7000, length: 8192, withId: false },
  { type: "reqPages", block: "0000:00:02.0/vga.vram", start: 2 ** 40, length: 4096, withId: true },
  { type: "resumeAck", value: 1 },
  { type: "shut", error: 0 },
];

function returnPathSeed(messages: readonly ReturnPathMessage[]): Seed {
  const seed = new SeedBuilder();
  for (const message of messages) {
    const bytes = encodeReturnPathMessage(message);
    const id = message.type === "reqPages" && message.withId ? [be(16, 1)] : [];
    seed.add(bytes, be(0, 2), be(2, 2), ...id);
  }
  return seed.build();
}

const RETURN_PATH_SEEDS = [
  returnPathSeed(RETURN_PATH_MESSAGES),
  returnPathSeed(RETURN_PATH_MESSAGES.slice(1, 3)),
  returnPathSeed([RETURN_PATH_MESSAGES[3]!, RETURN_PATH_MESSAGES[2]!, RETURN_PATH_MESSAGES[0]!]),
];

function decodeReturnPath(chunks: readonly Buffer[]): Outcome {
  const decoder = new ReturnPathDecoder();
  try {
    for (const chunk of chunks) {
      for (const message of decoder.push(chunk)) {
        if (message.type === "reqPages")
          check(Number.isSafeInteger(message.start), "unsafe page request start");
      }
    }
    return OK;
  } catch (error) {
    return typedOutcome(error, MIGRATION_RULE);
  }
}

export const MIGRATION_TARGETS: FuzzTarget[] = [
  defineTarget({
    name: "migration-reader",
    about:
      "MigrationStreamReader: mutated QEMU 7.2 streams, whole and in chunks (same result), then decodeCommand and splitDeviceSections on its events",
    arbitrary: fc.record({
      stream: chunked(
        fc.oneof({ weight: 9, arbitrary: fuzzBytes(MIGRATION_SEEDS) }, { weight: 1, arbitrary: oddVmdesc }),
      ),
      options: readerOptions,
    }),
    hugeLengths: fc.record({ stream: chunked(withHugeLengths(MIGRATION_SEEDS)), options: readerOptions }),
    run: runReader,
  }),
  defineTarget({
    name: "migration-return-path",
    about: "ReturnPathDecoder: mutated return-path messages, whole and in chunks (same result)",
    arbitrary: chunked(fuzzBytes(RETURN_PATH_SEEDS, 64)),
    hugeLengths: chunked(withHugeLengths(RETURN_PATH_SEEDS)),
    run: (input: Chunked) => {
      const whole = decodeReturnPath([input.bytes]);
      const split = decodeReturnPath(chunksOf(input));
      check(whole === split, `whole input gave ${whole}, the same bytes in chunks gave ${split}`);
      return whole;
    },
  }),
];
