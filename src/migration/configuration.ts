/**
 * The CONFIGURATION record (QEMU's vmstate "configuration" in savevm.c), right after the header:
 *
 *   offset 0  u8   0x07
 *   offset 1  be32 len
 *   offset 5  machine name[len]
 *   then zero or more subsections, each:
 *     u8 0x05, u8 n, name[n], be32 version, payload
 *       configuration/target-page-bits  be32
 *       configuration/capabilities      be32 count, count × (u8 n, name[n])
 *       configuration/uuid              16 bytes
 *   It ends where the next byte is not 0x05 (no terminator).
 *
 * `measureConfiguration` finds its length in a ByteQueue without consuming (or how many bytes it
 * needs first); `parseConfiguration` decodes complete bytes; `encodeConfiguration` writes them.
 */
import type { ByteQueue } from "../util/byte-queue.ts";
import { badStream, migrationError, tooLarge, unsupported } from "./errors.ts";
import { ConfigSubsection, Limits, Section, UUID_SIZE } from "./format.ts";
import type { ConfigurationInfo } from "./types.ts";

const LEN_OFFSET = 1;
const NAME_OFFSET = 5;
/** u8 0x05 + u8 name length */
const SUB_HEADER_SIZE = 2;
const SUB_VERSION_SIZE = 4;
const SUB_VERSION = 1;

/**
 * Every byte `measureConfiguration` may look at lies in the first CONFIGURATION_WINDOW bytes: it
 * throws once a subsection ends past Limits.configurationBytes, and the next subsection's header
 * and capability count reach at most 2 + 255 + 4 + 4 bytes further.
 */
export const CONFIGURATION_WINDOW = Limits.configurationBytes + 512;

/**
 * What `measureConfiguration` found: the record's length, or, while it is incomplete, the
 * buffered length to wait for (`need`) and where to measure from next time (`resume`, the end of
 * the last whole subsection), so that a record arriving in small chunks is not rescanned each time.
 */
export type ConfigurationMeasure = { length: number } | { need: number; resume: number };

/** Measures the configuration record at the queue's front without consuming. */
export function measureConfiguration(queue: ByteQueue, at: number, resume = 0): ConfigurationMeasure {
  let pos = resume;
  if (pos === 0) {
    if (queue.length < NAME_OFFSET) return { need: NAME_OFFSET, resume: 0 };
    const nameLength = queue.peekUInt32BE(LEN_OFFSET);
    if (nameLength > Limits.idstr) {
      throw tooLarge(at, "configuration machine name", nameLength, Limits.idstr);
    }
    pos = NAME_OFFSET + nameLength;
  }
  for (;;) {
    if (queue.length < pos + 1) return { need: pos + 1, resume: pos };
    if (queue.peekByte(pos) !== Section.SUBSECTION) return { length: pos };
    if (queue.length < pos + SUB_HEADER_SIZE) return { need: pos + SUB_HEADER_SIZE, resume: pos };
    const nameLen = queue.peekByte(pos + 1);
    const headerEnd = pos + SUB_HEADER_SIZE + nameLen + SUB_VERSION_SIZE;
    if (queue.length < headerEnd) return { need: headerEnd, resume: pos };
    const name = queue.peek(pos + SUB_HEADER_SIZE, nameLen).toString("latin1");
    const payload = measureSubsectionPayload(queue, headerEnd, name, at + pos);
    if ("need" in payload) return { need: payload.need, resume: pos };
    pos = headerEnd + payload.length;
    if (pos > Limits.configurationBytes) {
      throw tooLarge(at, "configuration", pos, Limits.configurationBytes);
    }
  }
}

function measureSubsectionPayload(
  queue: ByteQueue,
  start: number,
  name: string,
  at: number,
): { length: number } | { need: number } {
  switch (name) {
    case ConfigSubsection.TARGET_PAGE_BITS:
      return { length: 4 };
    case ConfigSubsection.UUID:
      return { length: UUID_SIZE };
    case ConfigSubsection.CAPABILITIES: {
      if (queue.length < start + 4) return { need: start + 4 };
      const count = queue.peekUInt32BE(start);
      if (count > Limits.capabilities) throw tooLarge(at, "capability list", count, Limits.capabilities);
      let pos = start + 4;
      for (let i = 0; i < count; i += 1) {
        if (queue.length < pos + 1) return { need: pos + 1 };
        pos += 1 + queue.peekByte(pos);
        if (pos > Limits.configurationBytes) {
          throw tooLarge(at, "configuration", pos, Limits.configurationBytes);
        }
      }
      return { length: pos - start };
    }
    default:
      throw unsupported(
        at,
        `unknown configuration subsection ${JSON.stringify(name)}`,
        "this stream comes from a QEMU newer than 7.2, or is damaged",
      );
  }
}

/** Decodes complete configuration bytes (as measured). `at` is their stream offset, for errors. */
export function parseConfiguration(raw: Buffer, at = 0): ConfigurationInfo {
  try {
    return decodeConfiguration(raw, at);
  } catch (error) {
    if (error instanceof RangeError) throw badStream(at, "configuration record is cut short");
    throw error;
  }
}

function decodeConfiguration(raw: Buffer, at: number): ConfigurationInfo {
  if (raw.length < NAME_OFFSET || raw[0] !== Section.CONFIGURATION) {
    throw badStream(at, "expected a CONFIGURATION record (0x07)");
  }
  const nameLength = raw.readUInt32BE(LEN_OFFSET);
  let pos = NAME_OFFSET + nameLength;
  if (pos > raw.length) throw badStream(at, "configuration machine name runs past its record");
  const info: ConfigurationInfo = { machine: raw.toString("latin1", NAME_OFFSET, pos), capabilities: [] };
  while (pos < raw.length) {
    if (raw[pos] !== Section.SUBSECTION) throw badStream(at + pos, "expected a configuration subsection");
    const nameLen = raw[pos + 1] ?? 0;
    const nameStart = pos + SUB_HEADER_SIZE;
    const name = raw.toString("latin1", nameStart, nameStart + nameLen);
    pos = nameStart + nameLen + SUB_VERSION_SIZE;
    if (name === ConfigSubsection.TARGET_PAGE_BITS) {
      info.targetPageBits = raw.readUInt32BE(pos);
      pos += 4;
    } else if (name === ConfigSubsection.UUID) {
      info.uuid = Buffer.from(raw.subarray(pos, pos + UUID_SIZE));
      pos += UUID_SIZE;
    } else if (name === ConfigSubsection.CAPABILITIES) {
      const count = raw.readUInt32BE(pos);
      pos += 4;
      for (let i = 0; i < count; i += 1) {
        const len = raw[pos] ?? 0;
        info.capabilities.push(raw.toString("latin1", pos + 1, pos + 1 + len));
        pos += 1 + len;
      }
    } else {
      throw unsupported(at + pos, `unknown configuration subsection ${JSON.stringify(name)}`, "");
    }
  }
  if (pos !== raw.length) throw badStream(at + raw.length, "configuration subsection runs past its record");
  return info;
}

/** Encodes a configuration record the way QEMU 7.2 does (subsections only when needed). */
export function encodeConfiguration(info: ConfigurationInfo): Buffer {
  const parts: Buffer[] = [];
  const head = Buffer.alloc(NAME_OFFSET);
  head[0] = Section.CONFIGURATION;
  const machine = Buffer.from(info.machine, "latin1");
  head.writeUInt32BE(machine.length, LEN_OFFSET);
  parts.push(head, machine);
  if (info.targetPageBits !== undefined) {
    const bits = Buffer.alloc(4);
    bits.writeUInt32BE(info.targetPageBits, 0);
    parts.push(subsectionHeader(ConfigSubsection.TARGET_PAGE_BITS), bits);
  }
  if (info.capabilities.length > 0) {
    const count = Buffer.alloc(4);
    count.writeUInt32BE(info.capabilities.length, 0);
    parts.push(subsectionHeader(ConfigSubsection.CAPABILITIES), count);
    for (const capability of info.capabilities) parts.push(shortString(capability));
  }
  if (info.uuid !== undefined) parts.push(subsectionHeader(ConfigSubsection.UUID), info.uuid);
  return Buffer.concat(parts);
}

function subsectionHeader(name: string): Buffer {
  const nameBytes = shortString(name);
  const out = Buffer.alloc(1 + nameBytes.length + SUB_VERSION_SIZE);
  out[0] = Section.SUBSECTION;
  nameBytes.copy(out, 1);
  out.writeUInt32BE(SUB_VERSION, 1 + nameBytes.length);
  return out;
}

/** u8 length + latin1 bytes (idstrs and capability names are ASCII, at most 255 bytes). */
export function shortString(text: string): Buffer {
  const bytes = Buffer.from(text, "latin1");
  if (bytes.length > Limits.idstr) {
    throw migrationError("MIGRATION_BAD_INPUT", `${JSON.stringify(text)} is longer than 255 bytes`);
  }
  return Buffer.concat([Buffer.from([bytes.length]), bytes]);
}
