import { HrError } from "../util/errors.ts";
import { internetChecksum } from "./checksum.ts";

/**
 * IPv4 header (RFC 791), all fields big-endian:
 *
 *   offset  size  field
 *   0       1     version (high 4 bits, = 4) | IHL, header length in 32-bit words (low 4 bits, >= 5)
 *   1       1     type of service (DSCP | ECN)
 *   2       2     total length (header + payload; the frame may carry padding after it)
 *   4       2     identification
 *   6       2     flags (reserved, DF, MF: high 3 bits) | fragment offset in 8-byte units (13 bits)
 *   8       1     TTL
 *   9       1     protocol (6 = TCP)
 *   10      2     header checksum (Internet checksum over the header only)
 *   12      4     source address
 *   16      4     destination address
 *   20      ...   options, IHL * 4 - 20 bytes
 *
 * `parseIpv4` never throws: bad version, IHL or total length yields undefined. It does not
 * verify the checksum (see `ipv4ChecksumOk`), as a switch forwards what guests send.
 */
export const VERSION_IHL_OFFSET = 0;
export const TOS_OFFSET = 1;
export const TOTAL_LENGTH_OFFSET = 2;
export const ID_OFFSET = 4;
export const FLAGS_FRAGMENT_OFFSET = 6;
export const TTL_OFFSET = 8;
export const PROTOCOL_OFFSET = 9;
export const CHECKSUM_OFFSET = 10;
export const SRC_OFFSET = 12;
export const DST_OFFSET = 16;
export const OPTIONS_OFFSET = 20;
export const MIN_HEADER_LENGTH = 20;
export const MAX_HEADER_LENGTH = 60;

export const PROTOCOL_ICMP = 1;
export const PROTOCOL_TCP = 6;
export const PROTOCOL_UDP = 17;

const FLAG_DF = 0x4000;
const FLAG_MF = 0x2000;

export interface Ipv4Packet {
  headerLength: number;
  tos: number;
  totalLength: number;
  id: number;
  dontFragment: boolean;
  moreFragments: boolean;
  /** In bytes (the header field times 8). */
  fragmentOffset: number;
  ttl: number;
  protocol: number;
  checksum: number;
  src: string;
  dst: string;
  options: Buffer;
  payload: Buffer;
}

export function parseIpv4(packet: Buffer): Ipv4Packet | undefined {
  if (packet.length < MIN_HEADER_LENGTH) return undefined;
  const versionIhl = packet.readUInt8(VERSION_IHL_OFFSET);
  if (versionIhl >> 4 !== 4) return undefined;
  const headerLength = (versionIhl & 0x0f) * 4;
  if (headerLength < MIN_HEADER_LENGTH || headerLength > packet.length) return undefined;
  const totalLength = packet.readUInt16BE(TOTAL_LENGTH_OFFSET);
  if (totalLength < headerLength || totalLength > packet.length) return undefined;
  const flagsFragment = packet.readUInt16BE(FLAGS_FRAGMENT_OFFSET);
  return {
    headerLength,
    tos: packet.readUInt8(TOS_OFFSET),
    totalLength,
    id: packet.readUInt16BE(ID_OFFSET),
    dontFragment: (flagsFragment & FLAG_DF) !== 0,
    moreFragments: (flagsFragment & FLAG_MF) !== 0,
    fragmentOffset: (flagsFragment & 0x1fff) * 8,
    ttl: packet.readUInt8(TTL_OFFSET),
    protocol: packet.readUInt8(PROTOCOL_OFFSET),
    checksum: packet.readUInt16BE(CHECKSUM_OFFSET),
    src: formatIpv4(packet, SRC_OFFSET),
    dst: formatIpv4(packet, DST_OFFSET),
    options: packet.subarray(OPTIONS_OFFSET, headerLength),
    payload: packet.subarray(headerLength, totalLength),
  };
}

/** True when the header checksum of a packet that parseIpv4 accepts is right. */
export function ipv4ChecksumOk(packet: Buffer): boolean {
  const headerLength = ((packet[VERSION_IHL_OFFSET] ?? 0) & 0x0f) * 4;
  if (headerLength < MIN_HEADER_LENGTH || headerLength > packet.length) return false;
  return internetChecksum(packet.subarray(0, headerLength)) === 0;
}

/** True for a packet that is a whole datagram (not a fragment). */
export function isUnfragmented(packet: Ipv4Packet): boolean {
  return !packet.moreFragments && packet.fragmentOffset === 0;
}

export interface Ipv4Fields {
  src: string;
  dst: string;
  protocol: number;
  ttl?: number;
  id?: number;
  tos?: number;
  dontFragment?: boolean;
  moreFragments?: boolean;
  /** In bytes, a multiple of 8. */
  fragmentOffset?: number;
  /** Already padded to a multiple of 4 bytes, at most 40. */
  options?: Uint8Array;
}

/** Builds a packet with a correct header checksum. Throws HrError IPV4_INVALID on bad fields. */
export function writeIpv4(fields: Ipv4Fields, payload: Uint8Array): Buffer {
  const options = fields.options ?? new Uint8Array(0);
  const fragmentOffset = fields.fragmentOffset ?? 0;
  if (options.length % 4 !== 0 || options.length > MAX_HEADER_LENGTH - MIN_HEADER_LENGTH) {
    throw new HrError(
      "IPV4_INVALID",
      `IPv4 options must be a multiple of 4 bytes up to 40, got ${options.length}`,
    );
  }
  if (fragmentOffset % 8 !== 0 || fragmentOffset > 0x1fff * 8) {
    throw new HrError("IPV4_INVALID", `bad IPv4 fragment offset ${fragmentOffset}`);
  }
  const headerLength = MIN_HEADER_LENGTH + options.length;
  const totalLength = headerLength + payload.length;
  if (totalLength > 0xffff)
    throw new HrError("IPV4_INVALID", `IPv4 packet of ${totalLength} bytes is too long`);
  const packet = Buffer.alloc(totalLength);
  packet.writeUInt8(0x40 | (headerLength / 4), VERSION_IHL_OFFSET);
  packet.writeUInt8(fields.tos ?? 0, TOS_OFFSET);
  packet.writeUInt16BE(totalLength, TOTAL_LENGTH_OFFSET);
  packet.writeUInt16BE(fields.id ?? 0, ID_OFFSET);
  const flags = ((fields.dontFragment ?? true) ? FLAG_DF : 0) | (fields.moreFragments ? FLAG_MF : 0);
  packet.writeUInt16BE(flags | (fragmentOffset / 8), FLAGS_FRAGMENT_OFFSET);
  packet.writeUInt8(fields.ttl ?? 64, TTL_OFFSET);
  packet.writeUInt8(fields.protocol, PROTOCOL_OFFSET);
  parseIpv4Address(fields.src).copy(packet, SRC_OFFSET);
  parseIpv4Address(fields.dst).copy(packet, DST_OFFSET);
  packet.set(options, OPTIONS_OFFSET);
  packet.writeUInt16BE(internetChecksum(packet.subarray(0, headerLength)), CHECKSUM_OFFSET);
  packet.set(payload, headerLength);
  return packet;
}

/** "10.77.0.1" from the 4 bytes at `offset`. */
export function formatIpv4(buf: Uint8Array, offset = 0): string {
  if (offset < 0 || offset + 4 > buf.length) throw new RangeError("IPv4 address out of range");
  return `${buf[offset] ?? 0}.${buf[offset + 1] ?? 0}.${buf[offset + 2] ?? 0}.${buf[offset + 3] ?? 0}`;
}

/** The 4 bytes of a dotted-quad address, or undefined if malformed. */
export function tryParseIpv4Address(text: string): Buffer | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const bytes: number[] = [];
  for (const part of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const value = Number(part);
    if (value > 255) return undefined;
    bytes.push(value);
  }
  return Buffer.from(bytes);
}

export function parseIpv4Address(text: string): Buffer {
  const bytes = tryParseIpv4Address(text);
  if (bytes === undefined) throw new HrError("IPV4_INVALID", `not an IPv4 address: ${JSON.stringify(text)}`);
  return bytes;
}
