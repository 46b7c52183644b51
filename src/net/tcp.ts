import { HrError } from "../util/errors.ts";
import { finishChecksum, sum16 } from "./checksum.ts";
import { parseIpv4Address, PROTOCOL_TCP } from "./ipv4.ts";

/**
 * TCP header (RFC 9293), all fields big-endian:
 *
 *   offset  size  field
 *   0       2     source port
 *   2       2     destination port
 *   4       4     sequence number
 *   8       4     acknowledgment number
 *   12      1     data offset, header length in 32-bit words (high 4 bits, >= 5) | reserved | NS
 *   13      1     flags: CWR ECE URG ACK PSH RST SYN FIN (high to low)
 *   14      2     window
 *   16      2     checksum, over the pseudo-header + header + payload
 *   18      2     urgent pointer
 *   20      ...   options, data offset * 4 - 20 bytes
 *
 * Pseudo-header summed into the checksum (not sent): source IPv4, destination IPv4, a zero byte,
 * protocol (6), TCP length (header + payload, 16 bits).
 * `parseTcp` never throws: a segment shorter than its data offset yields undefined.
 */
export const SRC_PORT_OFFSET = 0;
export const DST_PORT_OFFSET = 2;
export const SEQ_OFFSET = 4;
export const ACK_OFFSET = 8;
export const DATA_OFFSET_OFFSET = 12;
export const FLAGS_OFFSET = 13;
export const WINDOW_OFFSET = 14;
export const CHECKSUM_OFFSET = 16;
export const URGENT_OFFSET = 18;
export const OPTIONS_OFFSET = 20;
export const MIN_HEADER_LENGTH = 20;
export const MAX_HEADER_LENGTH = 60;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;
export const TCP_NS = 0x100;

const FLAG_NAMES: readonly [number, string][] = [
  [TCP_SYN, "SYN"],
  [TCP_FIN, "FIN"],
  [TCP_RST, "RST"],
  [TCP_PSH, "PSH"],
  [TCP_ACK, "ACK"],
  [TCP_URG, "URG"],
  [TCP_ECE, "ECE"],
  [TCP_CWR, "CWR"],
  [TCP_NS, "NS"],
];

export interface TcpSegment {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  headerLength: number;
  /** TCP_* bits, NS included. */
  flags: number;
  window: number;
  checksum: number;
  urgent: number;
  options: Buffer;
  payload: Buffer;
}

export function parseTcp(segment: Buffer): TcpSegment | undefined {
  if (segment.length < MIN_HEADER_LENGTH) return undefined;
  const offsetByte = segment.readUInt8(DATA_OFFSET_OFFSET);
  const headerLength = (offsetByte >> 4) * 4;
  if (headerLength < MIN_HEADER_LENGTH || headerLength > segment.length) return undefined;
  return {
    srcPort: segment.readUInt16BE(SRC_PORT_OFFSET),
    dstPort: segment.readUInt16BE(DST_PORT_OFFSET),
    seq: segment.readUInt32BE(SEQ_OFFSET),
    ack: segment.readUInt32BE(ACK_OFFSET),
    headerLength,
    flags: ((offsetByte & 0x01) << 8) | segment.readUInt8(FLAGS_OFFSET),
    window: segment.readUInt16BE(WINDOW_OFFSET),
    checksum: segment.readUInt16BE(CHECKSUM_OFFSET),
    urgent: segment.readUInt16BE(URGENT_OFFSET),
    options: segment.subarray(OPTIONS_OFFSET, headerLength),
    payload: segment.subarray(headerLength),
  };
}

/** Sequence space the segment occupies: payload bytes, plus one each for SYN and FIN. */
export function sequenceLength(segment: Pick<TcpSegment, "flags" | "payload">): number {
  return segment.payload.length + (segment.flags & TCP_SYN ? 1 : 0) + (segment.flags & TCP_FIN ? 1 : 0);
}

export function tcpFlagNames(flags: number): string[] {
  return FLAG_NAMES.filter(([bit]) => (flags & bit) !== 0).map(([, name]) => name);
}

function pseudoHeaderSum(srcIp: string, dstIp: string, tcpLength: number): number {
  const pseudo = Buffer.alloc(12);
  parseIpv4Address(srcIp).copy(pseudo, 0);
  parseIpv4Address(dstIp).copy(pseudo, 4);
  pseudo.writeUInt8(PROTOCOL_TCP, 9);
  pseudo.writeUInt16BE(tcpLength, 10);
  return sum16(pseudo);
}

/** True when the checksum of `segment` (header + payload, as sent) is right for these addresses. */
export function tcpChecksumOk(srcIp: string, dstIp: string, segment: Buffer): boolean {
  if (segment.length < MIN_HEADER_LENGTH || segment.length > 0xffff) return false;
  return finishChecksum(sum16(segment, pseudoHeaderSum(srcIp, dstIp, segment.length))) === 0;
}

export interface TcpFields {
  srcIp: string;
  dstIp: string;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack?: number;
  flags: number;
  window?: number;
  urgent?: number;
  /** Already padded to a multiple of 4 bytes, at most 40. */
  options?: Uint8Array;
}

/** Builds a segment with a correct checksum. Throws HrError TCP_INVALID on bad fields. */
export function writeTcp(fields: TcpFields, payload: Uint8Array): Buffer {
  const options = fields.options ?? new Uint8Array(0);
  if (options.length % 4 !== 0 || options.length > MAX_HEADER_LENGTH - MIN_HEADER_LENGTH) {
    throw new HrError(
      "TCP_INVALID",
      `TCP options must be a multiple of 4 bytes up to 40, got ${options.length}`,
    );
  }
  const headerLength = MIN_HEADER_LENGTH + options.length;
  const segment = Buffer.alloc(headerLength + payload.length);
  if (segment.length > 0xffff) throw new HrError("TCP_INVALID", `TCP segment of ${segment.length} bytes`);
  segment.writeUInt16BE(fields.srcPort, SRC_PORT_OFFSET);
  segment.writeUInt16BE(fields.dstPort, DST_PORT_OFFSET);
  segment.writeUInt32BE(fields.seq >>> 0, SEQ_OFFSET);
  segment.writeUInt32BE((fields.ack ?? 0) >>> 0, ACK_OFFSET);
  segment.writeUInt8(((headerLength / 4) << 4) | ((fields.flags >> 8) & 0x01), DATA_OFFSET_OFFSET);
  segment.writeUInt8(fields.flags & 0xff, FLAGS_OFFSET);
  segment.writeUInt16BE(fields.window ?? 65535, WINDOW_OFFSET);
  segment.writeUInt16BE(fields.urgent ?? 0, URGENT_OFFSET);
  segment.set(options, OPTIONS_OFFSET);
  segment.set(payload, headerLength);
  const sum = sum16(segment, pseudoHeaderSum(fields.srcIp, fields.dstIp, segment.length));
  segment.writeUInt16BE(finishChecksum(sum), CHECKSUM_OFFSET);
  return segment;
}
