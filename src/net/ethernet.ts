import { formatMac, parseMac, MAC_LENGTH } from "./mac.ts";

/**
 * Ethernet II frame as it travels on a QEMU stream (no preamble, no FCS):
 *
 *   offset  size  field
 *   0       6     destination MAC
 *   6       6     source MAC
 *   12      2     ethertype, or 0x8100 when an 802.1Q tag follows:
 *   14      2       tag control: priority (3 bits), drop eligible (1), VLAN id (12)
 *   16      2       ethertype
 *   14|18   ...   payload (a guest may or may not pad short frames to 60 bytes)
 *
 * Only one 802.1Q tag is decoded; a stacked (QinQ) frame shows the inner TPID as its ethertype.
 * `parseEthernet` never throws: a frame too short for its header yields undefined.
 */
export const DST_OFFSET = 0;
export const SRC_OFFSET = 6;
export const ETHERTYPE_OFFSET = 12;
export const VLAN_TCI_OFFSET = 14;
export const VLAN_ETHERTYPE_OFFSET = 16;
export const ETHERNET_HEADER_LENGTH = 14;
export const VLAN_HEADER_LENGTH = 18;

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERTYPE_IPV6 = 0x86dd;

export interface VlanTag {
  priority: number;
  dropEligible: boolean;
  id: number;
}

export interface EthernetFrame {
  dst: string;
  src: string;
  etherType: number;
  vlan: VlanTag | undefined;
  headerLength: number;
  payload: Buffer;
}

export function parseEthernet(frame: Buffer): EthernetFrame | undefined {
  if (frame.length < ETHERNET_HEADER_LENGTH) return undefined;
  const dst = formatMac(frame, DST_OFFSET);
  const src = formatMac(frame, SRC_OFFSET);
  const outerType = frame.readUInt16BE(ETHERTYPE_OFFSET);
  if (outerType !== ETHERTYPE_VLAN) {
    const payload = frame.subarray(ETHERNET_HEADER_LENGTH);
    return { dst, src, etherType: outerType, vlan: undefined, headerLength: ETHERNET_HEADER_LENGTH, payload };
  }
  if (frame.length < VLAN_HEADER_LENGTH) return undefined;
  const tci = frame.readUInt16BE(VLAN_TCI_OFFSET);
  const vlan = { priority: tci >> 13, dropEligible: (tci & 0x1000) !== 0, id: tci & 0x0fff };
  return {
    dst,
    src,
    etherType: frame.readUInt16BE(VLAN_ETHERTYPE_OFFSET),
    vlan,
    headerLength: VLAN_HEADER_LENGTH,
    payload: frame.subarray(VLAN_HEADER_LENGTH),
  };
}

export interface EthernetFields {
  dst: string;
  src: string;
  etherType: number;
  vlan?: VlanTag | undefined;
}

/** Builds a frame; throws HrError MAC_INVALID on a malformed address. */
export function writeEthernet(fields: EthernetFields, payload: Uint8Array): Buffer {
  const headerLength = fields.vlan === undefined ? ETHERNET_HEADER_LENGTH : VLAN_HEADER_LENGTH;
  const frame = Buffer.alloc(headerLength + payload.length);
  parseMac(fields.dst).copy(frame, DST_OFFSET);
  parseMac(fields.src).copy(frame, SRC_OFFSET);
  if (fields.vlan === undefined) {
    frame.writeUInt16BE(fields.etherType, ETHERTYPE_OFFSET);
  } else {
    const { priority, dropEligible, id } = fields.vlan;
    frame.writeUInt16BE(ETHERTYPE_VLAN, ETHERTYPE_OFFSET);
    frame.writeUInt16BE(
      ((priority & 0x7) << 13) | (dropEligible ? 0x1000 : 0) | (id & 0x0fff),
      VLAN_TCI_OFFSET,
    );
    frame.writeUInt16BE(fields.etherType, VLAN_ETHERTYPE_OFFSET);
  }
  frame.set(payload, headerLength);
  return frame;
}

/** True if the frame is long enough to carry both MAC addresses and a type. */
export function hasEthernetHeader(frame: Buffer): boolean {
  return frame.length >= 2 * MAC_LENGTH + 2;
}
