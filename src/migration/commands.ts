/**
 * 0x08 COMMAND records (layout: format.ts) — what a post-copy source sends besides RAM:
 *
 *   08 be16 cmd, be16 len, data[len]
 *     OPEN_RETURN_PATH 1  (no data)
 *     PING 2              be32 value (echoed as PONG on the return path)
 *     POSTCOPY_ADVISE 3   be64 ram page size summary, be64 target page size
 *     POSTCOPY_LISTEN 4   (no data)          POSTCOPY_RUN 5 (no data)
 *     POSTCOPY_RAM_DISCARD 6  u8 version 0, u8 n, block idstr[n], u8 0,
 *                             then (be64 start byte, be64 length bytes) per range
 *     PACKAGED 7          be32 n; then n bytes of embedded stream follow the command
 *
 * Encoders return the whole record; decodeCommand() reads the data of one (as the reader emits
 * it). QEMU 7.2 sends at most 12 discard ranges per command; longer lists are legal (len ≤ 65535).
 */
import { shortString } from "./configuration.ts";
import { migrationError } from "./errors.ts";
import { u64 } from "./encode.ts";
import { COMMAND_HEADER_SIZE, Command, PACKAGED_MAX, RAM_DISCARD_VERSION, Section } from "./format.ts";

const COMMAND_DATA_MAX = 0xffff;
const DISCARD_RANGE_SIZE = 16;

export interface DiscardRange {
  /** Byte offset within the block. */
  start: number;
  length: number;
}

export type DecodedCommand =
  | { cmd: "openReturnPath" | "listen" | "run" }
  | { cmd: "ping"; value: number }
  | { cmd: "advise"; ramPageSize: number; targetPageSize: number }
  | { cmd: "ramDiscard"; block: string; ranges: DiscardRange[] }
  | { cmd: "other"; number: number; data: Buffer };

export function encodeCommand(cmd: number, data: Buffer = Buffer.alloc(0)): Buffer {
  if (data.length > COMMAND_DATA_MAX) {
    throw migrationError("MIGRATION_BAD_INPUT", `command ${cmd}: ${data.length} data bytes (max 65535)`);
  }
  const head = Buffer.alloc(COMMAND_HEADER_SIZE);
  head[0] = Section.COMMAND;
  head.writeUInt16BE(cmd, 1);
  head.writeUInt16BE(data.length, 3);
  return Buffer.concat([head, data]);
}

export function encodeOpenReturnPath(): Buffer {
  return encodeCommand(Command.OPEN_RETURN_PATH);
}

export function encodePing(value: number): Buffer {
  const data = Buffer.alloc(4);
  data.writeUInt32BE(value >>> 0, 0);
  return encodeCommand(Command.PING, data);
}

export function encodePostcopyAdvise(ramPageSize = 4096, targetPageSize = 4096): Buffer {
  return encodeCommand(Command.POSTCOPY_ADVISE, Buffer.concat([u64(ramPageSize), u64(targetPageSize)]));
}

export function encodePostcopyListen(): Buffer {
  return encodeCommand(Command.POSTCOPY_LISTEN);
}

export function encodePostcopyRun(): Buffer {
  return encodeCommand(Command.POSTCOPY_RUN);
}

export function encodeRamDiscard(block: string, ranges: readonly DiscardRange[]): Buffer {
  const parts = [Buffer.from([RAM_DISCARD_VERSION]), shortString(block), Buffer.from([0])];
  for (const range of ranges) parts.push(u64(range.start), u64(range.length));
  return encodeCommand(Command.POSTCOPY_RAM_DISCARD, Buffer.concat(parts));
}

/** The PACKAGED command followed by its payload (an embedded stream without header). */
export function encodePackaged(payload: Buffer): Buffer {
  if (payload.length > PACKAGED_MAX) {
    throw migrationError(
      "MIGRATION_BAD_INPUT",
      `PACKAGED payload of ${payload.length} bytes (max ${PACKAGED_MAX})`,
    );
  }
  const length = Buffer.alloc(4);
  length.writeUInt32BE(payload.length, 0);
  return Buffer.concat([encodeCommand(Command.PACKAGED, length), payload]);
}

/** Decodes the data of a command event. Malformed data → MIGRATION_BAD_STREAM. */
export function decodeCommand(cmd: number, data: Buffer): DecodedCommand {
  const expect = (length: number): void => {
    if (data.length !== length) badData(cmd, `${data.length} data bytes, expected ${length}`);
  };
  switch (cmd) {
    case Command.OPEN_RETURN_PATH:
      expect(0);
      return { cmd: "openReturnPath" };
    case Command.POSTCOPY_LISTEN:
      expect(0);
      return { cmd: "listen" };
    case Command.POSTCOPY_RUN:
      expect(0);
      return { cmd: "run" };
    case Command.PING:
      expect(4);
      return { cmd: "ping", value: data.readUInt32BE(0) };
    case Command.POSTCOPY_ADVISE:
      expect(16);
      return { cmd: "advise", ramPageSize: readU64(data, 0), targetPageSize: readU64(data, 8) };
    case Command.POSTCOPY_RAM_DISCARD:
      return decodeRamDiscard(data);
    default:
      return { cmd: "other", number: cmd, data };
  }
}

function decodeRamDiscard(data: Buffer): DecodedCommand {
  const cmd = Command.POSTCOPY_RAM_DISCARD;
  if (data.length < 3 || data[0] !== RAM_DISCARD_VERSION) badData(cmd, "bad version or too short");
  const nameLength = data[1]!;
  let pos = 2 + nameLength;
  if (data[pos] !== 0) badData(cmd, "block name is not followed by a NUL");
  const block = data.toString("latin1", 2, pos);
  pos += 1;
  if ((data.length - pos) % DISCARD_RANGE_SIZE !== 0) badData(cmd, "ranges are not 16-byte pairs");
  const ranges: DiscardRange[] = [];
  for (; pos < data.length; pos += DISCARD_RANGE_SIZE) {
    ranges.push({ start: readU64(data, pos), length: readU64(data, pos + 8) });
  }
  return { cmd: "ramDiscard", block, ranges };
}

function readU64(data: Buffer, pos: number): number {
  const value = data.readBigUInt64BE(pos);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw migrationError("MIGRATION_BAD_STREAM", "64-bit value in a command is too large");
  }
  return Number(value);
}

function badData(cmd: number, what: string): never {
  throw migrationError("MIGRATION_BAD_STREAM", `bad migration stream: command ${cmd}: ${what}`);
}
