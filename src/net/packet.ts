import {
  ETHERTYPE_IPV4,
  parseEthernet,
  writeEthernet,
  type EthernetFrame,
  type VlanTag,
} from "./ethernet.ts";
import { isUnfragmented, parseIpv4, PROTOCOL_TCP, writeIpv4, type Ipv4Packet } from "./ipv4.ts";
import { parseTcp, writeTcp, type TcpSegment } from "./tcp.ts";

/**
 * Whole frames through the layers: Ethernet (optionally 802.1Q tagged) / IPv4 / TCP.
 * `parseTcpFrame` never throws; it yields undefined for anything that is not an unfragmented
 * IPv4 TCP segment with sane header lengths.
 */
export interface TcpFrame {
  ethernet: EthernetFrame;
  ip: Ipv4Packet;
  tcp: TcpSegment;
}

export function parseTcpFrame(frame: Buffer): TcpFrame | undefined {
  const ethernet = parseEthernet(frame);
  if (ethernet === undefined || ethernet.etherType !== ETHERTYPE_IPV4) return undefined;
  const ip = parseIpv4(ethernet.payload);
  if (ip === undefined || ip.protocol !== PROTOCOL_TCP || !isUnfragmented(ip)) return undefined;
  const tcp = parseTcp(ip.payload);
  if (tcp === undefined) return undefined;
  return { ethernet, ip, tcp };
}

export interface TcpFrameFields {
  srcMac: string;
  dstMac: string;
  vlan?: VlanTag;
  srcIp: string;
  dstIp: string;
  ipId?: number;
  ttl?: number;
  ipOptions?: Uint8Array;
  srcPort: number;
  dstPort: number;
  seq: number;
  ack?: number;
  flags: number;
  window?: number;
  tcpOptions?: Uint8Array;
}

/** A complete frame with correct IPv4 and TCP checksums. Throws HrError on malformed fields. */
export function buildTcpFrame(fields: TcpFrameFields, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const segment = writeTcp(
    {
      srcIp: fields.srcIp,
      dstIp: fields.dstIp,
      srcPort: fields.srcPort,
      dstPort: fields.dstPort,
      seq: fields.seq,
      ack: fields.ack,
      flags: fields.flags,
      window: fields.window,
      options: fields.tcpOptions,
    },
    payload,
  );
  const packet = writeIpv4(
    {
      src: fields.srcIp,
      dst: fields.dstIp,
      protocol: PROTOCOL_TCP,
      id: fields.ipId,
      ttl: fields.ttl,
      options: fields.ipOptions,
    },
    segment,
  );
  return writeEthernet(
    { dst: fields.dstMac, src: fields.srcMac, etherType: ETHERTYPE_IPV4, vlan: fields.vlan },
    packet,
  );
}
