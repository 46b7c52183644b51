/**
 * Streaming reader of QEMU 7.2 migration streams (layout: format.ts). Feed it chunks of any size
 * with push(); each call returns the events completed by that chunk; call end() at end of input.
 *
 * States (one record at a time; a state returns to wait when too few bytes are buffered):
 *
 *   header ─► afterHeader ─► configuration ─► top ◄────────────────────────────┐
 *                    └──────────────────────────┘│                            │
 *   top: 01 START ram ─► ramRecord ⇄ blockList    (MEM_SIZE, START only)      │
 *        02 PART / 03 END ─► ramRecord            ─► footer (after EOS) ──────┤
 *        08 COMMAND ─────────────────────────────────────────────────────────┤
 *        08 PACKAGED ─► package (be32 n bytes) ──────────────────────────────┘
 *        04 FULL ─► tail (kept whole until end(): device state, EOF, VMDESCRIPTION)
 *        00 EOF ─► afterEof ─► (06 VMDESCRIPTION) ─► done
 *   any error ─► failed (for good: push/end rethrow the first error)
 *
 * Only HrError escapes: MIGRATION_BAD_STREAM, MIGRATION_TRUNCATED, MIGRATION_UNSUPPORTED,
 * MIGRATION_TOO_LARGE. Every length is checked against Limits before anything is allocated.
 */
import { HrError, messageOf } from "../util/errors.ts";
import { ByteQueue } from "../util/byte-queue.ts";
import { CONFIGURATION_WINDOW, measureConfiguration, parseConfiguration } from "./configuration.ts";
import { badStream, hex, tooLarge, truncated, unsupported } from "./errors.ts";
import {
  COMMAND_HEADER_SIZE,
  COMMAND_MAX,
  Command,
  FOOTER_SIZE,
  HEADER_SIZE,
  Limits,
  QEVM_MAGIC,
  QEVM_VERSION,
  RAM_SECTION_IDSTR,
  SECTION_ID_HEADER_SIZE,
  SECTION_INSTANCE_VERSION_SIZE,
  Section,
} from "./format.ts";
import { RamParser, type RamSectionState } from "./ram-records.ts";
import { splitTail, parseVmdesc } from "./tail.ts";
import type { MigrationEvent, RamStart } from "./types.ts";

export interface ReaderOptions {
  /**
   * x-ignore-shared was on at the source (each block then carries its GPA). Default: what the
   * configuration's capabilities subsection says.
   */
  ignoreShared?: boolean;
  /** postcopy-ram was on at the source (blocks with non-host page sizes then carry it). */
  postcopyRam?: boolean;
  /** Host page size of the source; default 4096. */
  hostPageSize?: number;
  /** Page sizes of hugepage-backed blocks, by idstr (only read with postcopyRam). */
  blockPageSizes?: Readonly<Record<string, number>>;
}

type State =
  | "header"
  | "afterHeader"
  | "configuration"
  | "top"
  | "ramRecord"
  | "footer"
  | "package"
  | "tail"
  | "afterEof"
  | "done"
  | "failed";

const VMDESC_HEADER_SIZE = 5;

export class MigrationStreamReader {
  readonly #queue = new ByteQueue();
  readonly #options: ReaderOptions;
  readonly #ram: RamParser;
  #state: State = "header";
  #section: RamSectionState | undefined;
  #packageLength = 0;
  /** Buffered bytes the configuration record needs before it is measured again, and from where. */
  #configurationNeed = 0;
  #configurationResume = 0;
  #tail: Buffer[] = [];
  #tailLength = 0;
  #tailStart = 0;
  #error: HrError | undefined;

  constructor(options: ReaderOptions = {}) {
    this.#options = options;
    this.#ram = new RamParser(this.#queue, options);
  }

  /** The ram START seen so far (undefined before it). */
  get ramStart(): RamStart | undefined {
    return this.#ram.start;
  }

  /** Stream offset of the next byte to parse. */
  get offset(): number {
    return this.#state === "tail" ? this.#tailStart + this.#tailLength : this.#queue.consumed;
  }

  /**
   * Parses as far as `chunk` allows and returns the events it completed. The reader keeps views
   * of pushed chunks until it has parsed them: do not modify a chunk after pushing it. Page data
   * and every `raw` buffer in events are copies.
   */
  push(chunk: Buffer): MigrationEvent[] {
    return this.#guard(() => {
      const events: MigrationEvent[] = [];
      if (this.#state === "tail") {
        this.#addTail(chunk);
        return events;
      }
      this.#queue.push(chunk);
      while (this.#step(events));
      return events;
    });
  }

  /** End of input: flushes the tail (device state, EOF, VMDESCRIPTION) or reports truncation. */
  end(): MigrationEvent[] {
    return this.#guard(() => {
      const events: MigrationEvent[] = [];
      if (this.#state === "tail") {
        const tail = Buffer.concat(this.#tail, this.#tailLength);
        this.#tail = [];
        const split = splitTail(tail, this.#tailStart);
        events.push({ type: "deviceState", raw: split.deviceState }, { type: "eof" });
        if (split.vmdesc) events.push({ type: "vmdesc", ...split.vmdesc });
        this.#state = "done";
        return events;
      }
      if ((this.#state === "afterEof" || this.#state === "done") && this.#queue.length === 0) {
        this.#state = "done";
        return events;
      }
      throw truncated(this.#queue.consumed + this.#queue.length, describe(this.#state));
    });
  }

  #guard(work: () => MigrationEvent[]): MigrationEvent[] {
    if (this.#error) throw this.#error;
    try {
      return work();
    } catch (error) {
      this.#state = "failed";
      this.#queue.clear();
      this.#tail = [];
      this.#error =
        error instanceof HrError ? error : badStream(this.offset, `reader failure: ${messageOf(error)}`);
      throw this.#error;
    }
  }

  /** One step; false when more bytes are needed. */
  #step(events: MigrationEvent[]): boolean {
    const queue = this.#queue;
    switch (this.#state) {
      case "header":
        return this.#readHeader(events);
      case "afterHeader":
        if (queue.length < 1) return false;
        this.#state = queue.peekByte(0) === Section.CONFIGURATION ? "configuration" : "top";
        return true;
      case "configuration": {
        // Measured only once the bytes it asked for are in, from where it stopped, over one
        // chunk: measuring it whole at every push took time cubic in its size in small chunks.
        if (queue.length < this.#configurationNeed) return false;
        queue.compact(CONFIGURATION_WINDOW);
        const at = queue.consumed;
        const measured = measureConfiguration(queue, at, this.#configurationResume);
        if ("need" in measured) {
          this.#configurationNeed = measured.need;
          this.#configurationResume = measured.resume;
          return false;
        }
        const raw = queue.consumeCopy(measured.length);
        const info = parseConfiguration(raw, at);
        events.push({ type: "configuration", ...info, raw });
        this.#ram.ignoreShared = this.#options.ignoreShared ?? info.capabilities.includes("x-ignore-shared");
        this.#state = "top";
        return true;
      }
      case "top":
        return this.#readTop(events);
      case "ramRecord": {
        const section = this.#section!;
        const status = this.#ram.readRecord(section, events);
        if (status === "eos") this.#state = "footer";
        return status !== "more";
      }
      case "footer":
        return this.#readFooter(events);
      case "package": {
        if (queue.length < this.#packageLength) return false;
        events.push({ type: "packaged", data: queue.consumeCopy(this.#packageLength) });
        this.#state = "top";
        return true;
      }
      case "afterEof":
        return this.#readAfterEof(events);
      case "done":
        if (queue.length === 0) return false;
        throw badStream(queue.consumed, "bytes after the end of the stream");
      case "tail":
      case "failed":
        return false;
    }
  }

  #readHeader(events: MigrationEvent[]): boolean {
    const queue = this.#queue;
    if (queue.length < HEADER_SIZE) {
      // Reject garbage as early as its first bytes allow.
      const magic = Buffer.alloc(4);
      magic.writeUInt32BE(QEVM_MAGIC, 0);
      for (let i = 0; i < Math.min(queue.length, 4); i += 1) {
        if (queue.peekByte(i) !== magic[i]) throw badStream(i, "not a QEMU migration stream (bad magic)");
      }
      return false;
    }
    const header = queue.consume(HEADER_SIZE);
    if (header.readUInt32BE(0) !== QEVM_MAGIC) throw badStream(0, "not a QEMU migration stream (bad magic)");
    const version = header.readUInt32BE(4);
    if (version !== QEVM_VERSION) {
      throw badStream(4, `stream version ${version}, expected ${QEVM_VERSION}`);
    }
    events.push({ type: "header", version });
    this.#state = "afterHeader";
    return true;
  }

  #readTop(events: MigrationEvent[]): boolean {
    const queue = this.#queue;
    if (queue.length < 1) return false;
    const at = queue.consumed;
    const type = queue.peekByte(0);
    switch (type) {
      case Section.START: {
        if (queue.length < SECTION_ID_HEADER_SIZE + 1) return false;
        const idLength = queue.peekByte(SECTION_ID_HEADER_SIZE);
        const size = SECTION_ID_HEADER_SIZE + 1 + idLength + SECTION_INSTANCE_VERSION_SIZE;
        if (queue.length < size) return false;
        const header = queue.consumeCopy(size);
        const idstr = header.toString(
          "latin1",
          SECTION_ID_HEADER_SIZE + 1,
          SECTION_ID_HEADER_SIZE + 1 + idLength,
        );
        if (idstr !== RAM_SECTION_IDSTR) {
          throw unsupported(
            at,
            `iterative section ${JSON.stringify(idstr)} (only "ram" is supported)`,
            "turn off block migration (blk) and the dirty-bitmaps capability",
          );
        }
        const sectionId = header.readUInt32BE(1);
        const instanceId = header.readUInt32BE(size - SECTION_INSTANCE_VERSION_SIZE);
        const version = header.readUInt32BE(size - 4);
        this.#section = this.#ram.beginStart(at, header, { sectionId, instanceId, version });
        this.#state = "ramRecord";
        return true;
      }
      case Section.PART:
      case Section.END: {
        if (queue.length < SECTION_ID_HEADER_SIZE) return false;
        const sectionId = queue.peekUInt32BE(1);
        if (sectionId !== this.#ram.start?.sectionId) {
          throw badStream(
            at,
            `section ${sectionId} was never started (ram is ${String(this.#ram.start?.sectionId)})`,
          );
        }
        queue.consume(SECTION_ID_HEADER_SIZE);
        this.#section = this.#ram.beginPart(type === Section.END ? "end" : "part", sectionId);
        this.#state = "ramRecord";
        return true;
      }
      case Section.FULL:
        this.#tailStart = at;
        this.#state = "tail";
        this.#addTail(queue.consumeAll());
        return false;
      case Section.EOF:
        queue.consume(1);
        events.push({ type: "eof" });
        this.#state = "afterEof";
        return true;
      case Section.COMMAND:
        return this.#readCommand(events);
      default:
        throw badStream(at, `unknown section type ${hex(type)}`);
    }
  }

  #readCommand(events: MigrationEvent[]): boolean {
    const queue = this.#queue;
    if (queue.length < COMMAND_HEADER_SIZE) return false;
    const at = queue.consumed;
    const cmd = queue.peek(1, 2).readUInt16BE(0);
    const length = queue.peek(3, 2).readUInt16BE(0);
    if (cmd === Command.INVALID || cmd > COMMAND_MAX) throw badStream(at, `unknown command ${cmd}`);
    if (queue.length < COMMAND_HEADER_SIZE + length) return false;
    queue.consume(COMMAND_HEADER_SIZE);
    const data = queue.consumeCopy(length);
    if (cmd !== Command.PACKAGED) {
      events.push({ type: "command", cmd, data });
      return true;
    }
    if (length !== 4) throw badStream(at, `PACKAGED command with ${length} data bytes (expected 4)`);
    const packageLength = data.readUInt32BE(0);
    if (packageLength > Limits.packagedBytes) {
      throw tooLarge(at, "PACKAGED command", packageLength, Limits.packagedBytes);
    }
    this.#packageLength = packageLength;
    this.#state = "package";
    return true;
  }

  #readFooter(events: MigrationEvent[]): boolean {
    const queue = this.#queue;
    if (queue.length < FOOTER_SIZE) return false;
    const section = this.#section!;
    const at = queue.consumed;
    const footer = queue.consume(FOOTER_SIZE);
    if (footer[0] !== Section.FOOTER || footer.readUInt32BE(1) !== section.sectionId) {
      throw badStream(at, `missing footer of section ${section.sectionId}`);
    }
    const event = this.#ram.finishSection(section, footer);
    events.push(event);
    this.#section = undefined;
    this.#state = "top";
    return true;
  }

  #readAfterEof(events: MigrationEvent[]): boolean {
    const queue = this.#queue;
    if (queue.length < 1) return false;
    const at = queue.consumed;
    if (queue.peekByte(0) !== Section.VMDESCRIPTION) {
      throw badStream(at, `unexpected byte ${hex(queue.peekByte(0))} after EOF`);
    }
    if (queue.length < VMDESC_HEADER_SIZE) return false;
    const length = queue.peekUInt32BE(1);
    if (length > Limits.vmdescBytes) throw tooLarge(at, "VMDESCRIPTION", length, Limits.vmdescBytes);
    if (queue.length < VMDESC_HEADER_SIZE + length) return false;
    queue.consume(VMDESC_HEADER_SIZE);
    events.push({ type: "vmdesc", ...parseVmdesc(queue.consumeCopy(length), at + VMDESC_HEADER_SIZE) });
    this.#state = "done";
    return true;
  }

  #addTail(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#tailLength += chunk.length;
    const limit = Limits.deviceStateBytes + Limits.vmdescBytes;
    if (this.#tailLength > limit) {
      throw tooLarge(this.#tailStart, "device state and VMDESCRIPTION", this.#tailLength, limit);
    }
    this.#tail.push(chunk);
  }
}

function describe(state: State): string {
  switch (state) {
    case "header":
      return "the header";
    case "ramRecord":
      return "a RAM record";
    case "footer":
      return "a section footer";
    case "package":
      return "a PACKAGED command";
    default:
      return `the ${state} state (no EOF)`;
  }
}
