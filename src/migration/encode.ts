/**
 * Encoders for the pieces of a QEMU 7.2 stream (layout: format.ts): header, ram START / PART /
 * END sections, EOF, VMDESCRIPTION. Pure: each returns a Buffer. Invalid input (a page that is
 * not 4096 bytes, an offset outside its block) throws HrError MIGRATION_BAD_INPUT.
 */
import { shortString } from "./configuration.ts";
import { migrationError } from "./errors.ts";
import {
  FOOTER_SIZE,
  HEADER_SIZE,
  Limits,
  QEVM_MAGIC,
  QEVM_VERSION,
  RAM_RECORD_HEADER_SIZE,
  RAM_SECTION_IDSTR,
  RAM_SECTION_VERSION,
  RamFlag,
  SECTION_ID_HEADER_SIZE,
  Section,
  TARGET_PAGE_SIZE,
} from "./format.ts";
import type { PageRecord, RamBlockInfo, RamStart } from "./types.ts";

export type RamStartInput = Omit<RamStart, "totalBytes" | "instanceId" | "version"> &
  Partial<Pick<RamStart, "instanceId" | "version">>;

export function encodeHeader(): Buffer {
  const out = Buffer.alloc(HEADER_SIZE);
  out.writeUInt32BE(QEVM_MAGIC, 0);
  out.writeUInt32BE(QEVM_VERSION, 4);
  return out;
}

export function encodeFooter(sectionId: number): Buffer {
  const out = Buffer.alloc(FOOTER_SIZE);
  out[0] = Section.FOOTER;
  out.writeUInt32BE(sectionId, 1);
  return out;
}

export function encodeEof(): Buffer {
  return Buffer.from([Section.EOF]);
}

/** 06 be32 len JSON. `json` is the text (as QEMU wrote it) or an object to stringify. */
export function encodeVmdesc(json: Buffer | string | object): Buffer {
  const text = Buffer.isBuffer(json)
    ? json
    : Buffer.from(typeof json === "string" ? json : JSON.stringify(json), "utf8");
  if (text.length > Limits.vmdescBytes) throw badInput(`VMDESCRIPTION of ${text.length} bytes is too large`);
  const head = Buffer.alloc(5);
  head[0] = Section.VMDESCRIPTION;
  head.writeUInt32BE(text.length, 1);
  return Buffer.concat([head, text]);
}

/** The ram SECTION_START: MEM_SIZE, the block list, EOS, footer. */
export function encodeRamStart(start: RamStartInput): Buffer {
  if (start.blocks.length === 0 || start.blocks.length > Limits.ramBlocks) {
    throw badInput(`a RAM block list needs 1..${Limits.ramBlocks} blocks, got ${start.blocks.length}`);
  }
  const withGpa = start.blocks.filter((block) => block.gpa !== undefined).length;
  if (withGpa !== 0 && withGpa !== start.blocks.length) {
    throw badInput("either every RAM block has a gpa (x-ignore-shared) or none has");
  }
  const idstr = shortString(RAM_SECTION_IDSTR);
  const head = Buffer.alloc(SECTION_ID_HEADER_SIZE + idstr.length + 8);
  head[0] = Section.START;
  head.writeUInt32BE(start.sectionId, 1);
  idstr.copy(head, SECTION_ID_HEADER_SIZE);
  head.writeUInt32BE(start.instanceId ?? 0, SECTION_ID_HEADER_SIZE + idstr.length);
  head.writeUInt32BE(start.version ?? RAM_SECTION_VERSION, SECTION_ID_HEADER_SIZE + idstr.length + 4);
  const total = start.blocks.reduce((sum, block) => sum + block.usedLength, 0);
  const parts = [head, u64(total + RamFlag.MEM_SIZE)];
  for (const block of start.blocks) {
    if (block.usedLength <= 0 || block.usedLength % TARGET_PAGE_SIZE !== 0) {
      throw badInput(`RAM block ${block.id}: length ${block.usedLength} is not a positive multiple of 4096`);
    }
    parts.push(shortString(block.id), u64(block.usedLength));
    if (block.pageSize !== undefined) parts.push(u64(block.pageSize));
    if (block.gpa !== undefined) parts.push(u64(block.gpa));
  }
  parts.push(u64(RamFlag.EOS), encodeFooter(start.sectionId));
  return Buffer.concat(parts);
}

/**
 * A ram SECTION_PART (or SECTION_END) holding `pages`, then EOS and the footer. Consecutive pages
 * of one block use CONTINUE; the first page of the section always names its block. `blocks`, when
 * given, is checked: unknown blocks and offsets beyond a block's length are refused.
 */
export function encodeRamSection(
  kind: "part" | "end",
  sectionId: number,
  pages: readonly PageRecord[],
  blocks?: ReadonlyMap<string, RamBlockInfo>,
): Buffer {
  // One buffer sized up front: this runs for every page of a restore, so no per-page allocation.
  let size = SECTION_ID_HEADER_SIZE + 8 + FOOTER_SIZE;
  let previous: string | undefined;
  for (const page of pages) {
    checkPage(page, blocks);
    size += pageRecordSize(page, page.block === previous);
    previous = page.block;
  }
  const out = Buffer.allocUnsafe(size);
  out[0] = kind === "end" ? Section.END : Section.PART;
  out.writeUInt32BE(sectionId, 1);
  let at = SECTION_ID_HEADER_SIZE;
  previous = undefined;
  for (const page of pages) {
    const zero = page.zero === true;
    const sameBlock = page.block === previous;
    const flags = (zero ? RamFlag.ZERO : RamFlag.PAGE) | (sameBlock ? RamFlag.CONTINUE : 0);
    at = writeU64(out, at, page.offset + flags);
    if (!sameBlock) {
      out[at] = Buffer.byteLength(page.block, "latin1");
      at += 1;
      at += out.write(page.block, at, "latin1");
    }
    if (zero) {
      out[at] = page.fill ?? 0;
      at += 1;
    } else {
      at += (page.data as Buffer).copy(out, at);
    }
    previous = page.block;
  }
  at = writeU64(out, at, RamFlag.EOS);
  encodeFooter(sectionId).copy(out, at);
  return out;
}

function writeU64(out: Buffer, at: number, value: number): number {
  out.writeUInt32BE(Math.floor(value / 2 ** 32), at);
  out.writeUInt32BE(value % 2 ** 32, at + 4);
  return at + 8;
}

/** Encoded size of a page record (for batching), given whether it continues the previous block. */
export function pageRecordSize(page: PageRecord, continues: boolean): number {
  const id = continues ? 0 : 1 + Buffer.byteLength(page.block, "latin1");
  return RAM_RECORD_HEADER_SIZE + id + (page.zero === true ? 1 : TARGET_PAGE_SIZE);
}

function checkPage(page: PageRecord, blocks: ReadonlyMap<string, RamBlockInfo> | undefined): void {
  const where = (): string => `page ${page.block}+0x${page.offset.toString(16)}`;
  if (!Number.isSafeInteger(page.offset) || page.offset < 0 || page.offset % TARGET_PAGE_SIZE !== 0) {
    throw badInput(`${where()}: offset is not a multiple of 4096`);
  }
  if (page.zero === true) {
    if (page.data !== undefined) throw badInput(`${where()}: both zero and data`);
  } else if (page.data?.length !== TARGET_PAGE_SIZE) {
    throw badInput(`${where()}: data must be exactly 4096 bytes (or zero: true)`);
  }
  if (Buffer.byteLength(page.block, "latin1") > 255)
    throw badInput(`${where()}: block id longer than 255 bytes`);
  if (blocks) {
    const block = blocks.get(page.block);
    if (!block) throw badInput(`${where()}: unknown RAM block`);
    if (page.offset >= block.usedLength) {
      throw badInput(`${where()}: beyond the block (${block.usedLength} bytes)`);
    }
  }
}

export function u64(value: number): Buffer {
  if (!Number.isSafeInteger(value) || value < 0) throw badInput(`${value} is not a u64 we can encode`);
  const out = Buffer.alloc(8);
  out.writeUInt32BE(Math.floor(value / 2 ** 32), 0);
  out.writeUInt32BE(value % 2 ** 32, 4);
  return out;
}

function badInput(message: string): Error {
  return migrationError("MIGRATION_BAD_INPUT", message);
}
