import { formatIpv4, parseIpv4Address } from "./ipv4.ts";
import { formatMac, parseMac } from "./mac.ts";

/**
 * ARP for IPv4 over Ethernet (RFC 826), the only kind the guests use:
 *
 *   offset  size  field
 *   0       2     hardware type (1 = Ethernet)
 *   2       2     protocol type (0x0800 = IPv4)
 *   4       1     hardware address length (6)
 *   5       1     protocol address length (4)
 *   6       2     operation (1 = request, 2 = reply)
 *   8       6     sender MAC
 *   14      4     sender IPv4
 *   18      6     target MAC
 *   24      4     target IPv4
 *
 * `parseArp` never throws: other hardware/protocol kinds and short input yield undefined.
 */
export const HTYPE_OFFSET = 0;
export const PTYPE_OFFSET = 2;
export const HLEN_OFFSET = 4;
export const PLEN_OFFSET = 5;
export const OPER_OFFSET = 6;
export const SHA_OFFSET = 8;
export const SPA_OFFSET = 14;
export const THA_OFFSET = 18;
export const TPA_OFFSET = 24;
export const ARP_LENGTH = 28;

export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;

export interface ArpPacket {
  operation: number;
  senderMac: string;
  senderIp: string;
  targetMac: string;
  targetIp: string;
}

export function parseArp(packet: Buffer): ArpPacket | undefined {
  if (packet.length < ARP_LENGTH) return undefined;
  if (packet.readUInt16BE(HTYPE_OFFSET) !== 1 || packet.readUInt16BE(PTYPE_OFFSET) !== 0x0800)
    return undefined;
  if (packet.readUInt8(HLEN_OFFSET) !== 6 || packet.readUInt8(PLEN_OFFSET) !== 4) return undefined;
  return {
    operation: packet.readUInt16BE(OPER_OFFSET),
    senderMac: formatMac(packet, SHA_OFFSET),
    senderIp: formatIpv4(packet, SPA_OFFSET),
    targetMac: formatMac(packet, THA_OFFSET),
    targetIp: formatIpv4(packet, TPA_OFFSET),
  };
}

/** Builds an ARP packet (the Ethernet payload). Throws HrError on a malformed address. */
export function writeArp(fields: ArpPacket): Buffer {
  const packet = Buffer.alloc(ARP_LENGTH);
  packet.writeUInt16BE(1, HTYPE_OFFSET);
  packet.writeUInt16BE(0x0800, PTYPE_OFFSET);
  packet.writeUInt8(6, HLEN_OFFSET);
  packet.writeUInt8(4, PLEN_OFFSET);
  packet.writeUInt16BE(fields.operation, OPER_OFFSET);
  parseMac(fields.senderMac).copy(packet, SHA_OFFSET);
  parseIpv4Address(fields.senderIp).copy(packet, SPA_OFFSET);
  parseMac(fields.targetMac).copy(packet, THA_OFFSET);
  parseIpv4Address(fields.targetIp).copy(packet, TPA_OFFSET);
  return packet;
}
