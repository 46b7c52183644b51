/**
 * The records inside the "ram" iterative section (layout: format.ts, "RAM section payload").
 * Used by MigrationStreamReader: one record per readRecord() call, nothing consumed until the
 * whole record is buffered. Tracks the block list of the START section and the block of the last
 * page record, which CONTINUE refers to (across sections, as in QEMU).
 */
import type { HrError } from "../util/errors.ts";
import type { ByteQueue } from "../util/byte-queue.ts";
import { badStream, hex, tooLarge, unsupported } from "./errors.ts";
import { Limits, RAM_FLAGS_MASK, RAM_RECORD_HEADER_SIZE, RamFlag, TARGET_PAGE_SIZE } from "./format.ts";
import type { MigrationEvent, RamBlockInfo, RamBlocksEvent, RamSectionEvent, RamStart } from "./types.ts";

export interface RamSectionState {
  kind: "start" | "part" | "end";
  sectionId: number;
  pages: number;
  /** START only: bytes captured for the event's `raw`. */
  raw: Buffer[] | undefined;
  start: RamStart | undefined;
  /** START only: bytes of blocks still to come in the MEM_SIZE block list. */
  blockBytesLeft: number;
}

export interface RamParserOptions {
  postcopyRam?: boolean;
  hostPageSize?: number;
  blockPageSizes?: Readonly<Record<string, number>>;
}

/** Offsets above 2^53 cannot be numbers; no RAM block is that big. */
const MAX_HIGH_WORD = 0x1fffff;
const BLOCK_U64_SIZE = 8;

export class RamParser {
  readonly #queue: ByteQueue;
  readonly #options: RamParserOptions;
  readonly #blocks = new Map<string, RamBlockInfo>();
  #start: RamStart | undefined;
  #lastBlock: RamBlockInfo | undefined;
  ignoreShared = false;

  constructor(queue: ByteQueue, options: RamParserOptions) {
    this.#queue = queue;
    this.#options = options;
  }

  get start(): RamStart | undefined {
    return this.#start;
  }

  beginStart(
    at: number,
    header: Buffer,
    ids: { sectionId: number; instanceId: number; version: number },
  ): RamSectionState {
    if (this.#start) throw badStream(at, "a second ram SECTION_START");
    const start: RamStart = { ...ids, totalBytes: 0, blocks: [] };
    return { kind: "start", sectionId: ids.sectionId, pages: 0, raw: [header], start, blockBytesLeft: 0 };
  }

  beginPart(kind: "part" | "end", sectionId: number): RamSectionState {
    return { kind, sectionId, pages: 0, raw: undefined, start: undefined, blockBytesLeft: 0 };
  }

  /** "more": wait for bytes; "progress": one record read; "eos": the EOS record was read. */
  readRecord(section: RamSectionState, events: MigrationEvent[]): "more" | "progress" | "eos" {
    if (section.blockBytesLeft > 0) return this.#readBlock(section);
    const queue = this.#queue;
    if (queue.length < RAM_RECORD_HEADER_SIZE) return "more";
    const at = queue.consumed;
    const head = queue.peek(0, RAM_RECORD_HEADER_SIZE);
    const high = head.readUInt32BE(0);
    const low = head.readUInt32BE(4);
    const flags = low & RAM_FLAGS_MASK;
    if (high > MAX_HIGH_WORD) throw badStream(at, `RAM record offset ${hex(high)}xxxxxxxx is too large`);
    const address = high * 2 ** 32 + (low - flags);
    const kind = flags & ~RamFlag.CONTINUE;
    switch (kind) {
      case RamFlag.EOS:
        this.#take(section, RAM_RECORD_HEADER_SIZE);
        return "eos";
      case RamFlag.MEM_SIZE:
        if (!section.start || section.start.blocks.length > 0 || flags !== RamFlag.MEM_SIZE) {
          throw badStream(at, "MEM_SIZE record outside the start of the ram SECTION_START");
        }
        this.#take(section, RAM_RECORD_HEADER_SIZE);
        section.start.totalBytes = address;
        section.blockBytesLeft = address;
        return "progress";
      case RamFlag.ZERO:
      case RamFlag.PAGE:
        return this.#readPage(section, events, at, address, flags);
      default:
        throw refusedFlags(at, flags);
    }
  }

  #readBlock(section: RamSectionState): "more" | "progress" {
    const queue = this.#queue;
    const start = section.start!;
    if (queue.length < 1) return "more";
    const at = queue.consumed;
    const idLength = queue.peekByte(0);
    if (idLength === 0) throw badStream(at, "RAM block with an empty idstr");
    const id = queue.length > idLength ? queue.peek(1, idLength).toString("latin1") : "";
    const hostPageSize = this.#options.hostPageSize ?? TARGET_PAGE_SIZE;
    const hasPageSize =
      this.#options.postcopyRam === true &&
      (this.#options.blockPageSizes?.[id] ?? hostPageSize) !== hostPageSize;
    const size = 1 + idLength + BLOCK_U64_SIZE * (1 + (hasPageSize ? 1 : 0) + (this.ignoreShared ? 1 : 0));
    if (queue.length < size) return "more";
    if (start.blocks.length >= Limits.ramBlocks) {
      throw tooLarge(at, "RAM block list", start.blocks.length + 1, Limits.ramBlocks);
    }
    const bytes = this.#take(section, size);
    let pos = 1 + idLength;
    const block: RamBlockInfo = { id, usedLength: readU64(bytes, pos, at) };
    pos += BLOCK_U64_SIZE;
    if (hasPageSize) {
      block.pageSize = readU64(bytes, pos, at);
      pos += BLOCK_U64_SIZE;
    }
    if (this.ignoreShared) block.gpa = readU64(bytes, pos, at);
    if (block.usedLength === 0 || block.usedLength > section.blockBytesLeft) {
      throw badStream(at, `RAM block ${id} length ${block.usedLength} does not fit the MEM_SIZE total`);
    }
    if (this.#blocks.has(id)) throw badStream(at, `RAM block ${id} listed twice`);
    section.blockBytesLeft -= block.usedLength;
    start.blocks.push(block);
    this.#blocks.set(id, block);
    return "progress";
  }

  #readPage(
    section: RamSectionState,
    events: MigrationEvent[],
    at: number,
    offset: number,
    flags: number,
  ): "more" | "progress" {
    const queue = this.#queue;
    if (section.kind === "start") {
      throw unsupported(at, "page records inside the ram SECTION_START", "QEMU 7.2 never writes them");
    }
    const zero = (flags & RamFlag.ZERO) !== 0;
    const payload = zero ? 1 : TARGET_PAGE_SIZE;
    let idBytes = 0;
    let block = this.#lastBlock;
    if ((flags & RamFlag.CONTINUE) === 0) {
      if (queue.length < RAM_RECORD_HEADER_SIZE + 1) return "more";
      idBytes = 1 + queue.peekByte(RAM_RECORD_HEADER_SIZE);
    } else if (!block) {
      throw badStream(at, "CONTINUE page record without a previous block");
    }
    if (queue.length < RAM_RECORD_HEADER_SIZE + idBytes + payload) return "more";
    queue.consume(RAM_RECORD_HEADER_SIZE);
    if (idBytes > 0) {
      const id = queue.consume(idBytes).toString("latin1", 1);
      block = this.#blocks.get(id);
      if (!block) throw badStream(at, `page of unknown RAM block ${JSON.stringify(id)}`);
      this.#lastBlock = block;
    }
    if (offset >= block!.usedLength) {
      throw badStream(
        at,
        `page at ${hex(offset)} is beyond RAM block ${block!.id} (${block!.usedLength} bytes)`,
      );
    }
    section.pages += 1;
    if (zero) {
      events.push({ type: "page", block: block!.id, offset, kind: "zero", fill: queue.consume(1)[0]! });
    } else {
      const data = queue.consumeCopy(TARGET_PAGE_SIZE);
      events.push({ type: "page", block: block!.id, offset, kind: "data", data, fill: 0 });
    }
    return "progress";
  }

  finishSection(section: RamSectionState, footer: Buffer): RamBlocksEvent | RamSectionEvent {
    if (section.kind !== "start") {
      return { type: "ramSection", kind: section.kind, sectionId: section.sectionId, pages: section.pages };
    }
    const start = section.start!;
    if (start.blocks.length === 0 || section.blockBytesLeft > 0) {
      throw badStream(this.#queue.consumed, "ram SECTION_START without a complete block list");
    }
    this.#start = start;
    const raw = Buffer.concat([...section.raw!, footer]);
    return { type: "ramBlocks", ...start, blocks: start.blocks.map((block) => ({ ...block })), raw };
  }

  /** Consumes n bytes, keeping a copy when the section's raw bytes are being captured. */
  #take(section: RamSectionState, n: number): Buffer {
    const bytes = this.#queue.consumeCopy(n);
    section.raw?.push(bytes);
    return bytes;
  }
}

function readU64(bytes: Buffer, pos: number, at: number): number {
  const high = bytes.readUInt32BE(pos);
  if (high > MAX_HIGH_WORD) throw badStream(at, "64-bit value too large");
  return high * 2 ** 32 + bytes.readUInt32BE(pos + 4);
}

function refusedFlags(at: number, flags: number): HrError {
  const off = (capability: string): string => `turn off the ${capability} migration capability`;
  if (flags & RamFlag.XBZRLE) return unsupported(at, "XBZRLE-encoded page", off("xbzrle"));
  if (flags & RamFlag.COMPRESS_PAGE)
    return unsupported(at, "compressed page (COMPRESS_PAGE)", off("compress"));
  if (flags & RamFlag.HOOK)
    return unsupported(at, "RDMA hook record (RAM flag 0x80)", "do not migrate over rdma:");
  if (flags & RamFlag.MULTIFD_FLUSH) return unsupported(at, "MULTIFD_FLUSH record", off("multifd"));
  if (flags & RamFlag.FULL) return badStream(at, "obsolete RAM FULL record");
  return badStream(at, `RAM record with flags ${hex(flags)}`);
}
