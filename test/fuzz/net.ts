/**
 * Fuzz targets of the switch's parsers (src/net): the Ethernet / 802.1Q / IPv4 / TCP / ARP
 * parsers (documented never to throw), the length-prefixed stream framing of a switch port with
 * every decoded frame going through the switch's sensor path (MAC keys, TrafficMonitor, flow
 * table), the pcap reader, and the flow table fed random segments.
 */
import fc from "fast-check";
import { ARP_REQUEST, parseArp, writeArp } from "../../src/net/arp.ts";
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, parseEthernet, writeEthernet } from "../../src/net/ethernet.ts";
import { flowKey, FlowTable, type FlowSegment } from "../../src/net/flows.ts";
import { encodeFrames, FrameDecoder, MAX_FRAME_LENGTH } from "../../src/net/frame-stream.ts";
import { ipv4ChecksumOk, parseIpv4, PROTOCOL_UDP, writeIpv4 } from "../../src/net/ipv4.ts";
import { isGroupMac, macKey } from "../../src/net/mac.ts";
import { buildTcpFrame, parseTcpFrame, type TcpFrameFields } from "../../src/net/packet.ts";
import {
  encodePcapHeader,
  encodePcapRecord,
  MAGIC_NANOSECONDS,
  MAX_RECORD_LENGTH,
  parsePcap,
  PcapDecoder,
} from "../../src/net/pcap.ts";
import {
  parseTcp,
  sequenceLength,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_SYN,
  tcpChecksumOk,
  tcpFlagNames,
} from "../../src/net/tcp.ts";
import { TrafficMonitor } from "../../src/net/traffic-monitor.ts";
import { HrError } from "../../src/util/errors.ts";
import {
  check,
  defineTarget,
  FuzzFailure,
  OK,
  typedOutcome,
  type FuzzTarget,
  type Outcome,
} from "./harness.ts";
import {
  be,
  chunked,
  chunksOf,
  fuzzBytes,
  le,
  SeedBuilder,
  type Chunked,
  type LengthField,
  type Seed,
  withHugeLengths,
} from "./mutate.ts";

const BASE: TcpFrameFields = {
  srcMac: "52:54:00:00:00:01",
  dstMac: "52:54:00:00:00:02",
  srcIp: "10.77.0.1",
  dstIp: "10.77.0.2",
  srcPort: 34567,
  dstPort: 80,
  seq: 0xfffffff0,
  ack: 7,
  flags: TCP_ACK | TCP_PSH,
};

/** The length-ish fields of an Ethernet/IPv4/TCP frame whose IP header starts at `ip`. */
function tcpFields(ip: number, ipHeader: number): LengthField[] {
  const tcp = ip + ipHeader;
  return [be(ip, 1), be(ip + 2, 2), be(ip + 6, 2), be(ip + 9, 1), be(tcp + 12, 1), be(tcp + 13, 1)];
}

function tcpSeed(fields: Partial<TcpFrameFields>, payload: Buffer): Seed {
  const all = { ...BASE, ...fields };
  const ip = all.vlan === undefined ? 14 : 18;
  const ipHeader = 20 + (all.ipOptions?.length ?? 0);
  const vlanFields = all.vlan === undefined ? [be(12, 2)] : [be(12, 2), be(16, 2)];
  return { bytes: buildTcpFrame(all, payload), fields: [...vlanFields, ...tcpFields(ip, ipHeader)] };
}

const ARP_FRAME: Seed = {
  bytes: writeEthernet(
    { dst: "ff:ff:ff:ff:ff:ff", src: BASE.srcMac, etherType: ETHERTYPE_ARP },
    writeArp({
      operation: ARP_REQUEST,
      senderMac: BASE.srcMac,
      senderIp: BASE.srcIp,
      targetMac: "00:00:00:00:00:00",
      targetIp: BASE.dstIp,
    }),
  ),
  fields: [be(12, 2), be(14, 2), be(16, 2), be(18, 1), be(19, 1), be(20, 2)],
};

const UDP_FRAGMENT: Seed = {
  bytes: writeEthernet(
    { dst: BASE.dstMac, src: BASE.srcMac, etherType: ETHERTYPE_IPV4 },
    writeIpv4(
      { src: BASE.srcIp, dst: BASE.dstIp, protocol: PROTOCOL_UDP, moreFragments: true, fragmentOffset: 64 },
      Buffer.alloc(40, 9),
    ),
  ),
  fields: [be(12, 2), be(14, 1), be(16, 2), be(20, 2), be(23, 1)],
};

export const FRAME_SEEDS: readonly Seed[] = [
  tcpSeed({}, Buffer.from("GET / HTTP/1.1\r\n\r\n")),
  tcpSeed({ flags: TCP_SYN, seq: 1, tcpOptions: Buffer.from([2, 4, 5, 0xb4, 1, 3, 3, 7]) }, Buffer.alloc(0)),
  tcpSeed(
    { vlan: { priority: 5, dropEligible: true, id: 42 }, ipOptions: Buffer.from([1, 1, 1, 0]) },
    Buffer.alloc(64, 1),
  ),
  tcpSeed({ flags: TCP_FIN | TCP_ACK }, Buffer.alloc(0)),
  ARP_FRAME,
  UDP_FRAGMENT,
];

/** Every parser at every layer, on the frame and on the bytes a layer hands to the next. */
function parseEverything(frame: Buffer): void {
  parseIpv4(frame);
  parseTcp(frame);
  parseArp(frame);
  ipv4ChecksumOk(frame);
  const ethernet = parseEthernet(frame);
  if (ethernet !== undefined) {
    check(ethernet.headerLength + ethernet.payload.length === frame.length, "ethernet payload length");
    parseArp(ethernet.payload);
    ipv4ChecksumOk(ethernet.payload);
    const ip = parseIpv4(ethernet.payload);
    if (ip !== undefined) {
      check(ip.headerLength >= 20 && ip.headerLength <= 60, "IPv4 header length out of bounds");
      check(ip.options.length === ip.headerLength - 20, "IPv4 options length");
      check(ip.payload.length === ip.totalLength - ip.headerLength, "IPv4 payload length");
      const tcp = parseTcp(ip.payload);
      if (tcp !== undefined) {
        check(tcp.headerLength + tcp.payload.length === ip.payload.length, "TCP payload length");
        check(tcp.options.length === tcp.headerLength - 20, "TCP options length");
        tcpChecksumOk(ip.src, ip.dst, ip.payload);
        tcpFlagNames(tcp.flags);
        check(sequenceLength(tcp) <= tcp.payload.length + 2, "sequence length");
      }
    }
  }
  const tcpFrame = parseTcpFrame(frame);
  if (tcpFrame !== undefined) {
    check(tcpFrame.ip.protocol === 6 && tcpFrame.ethernet.etherType === ETHERTYPE_IPV4, "not TCP over IPv4");
    check(tcpFrame.tcp.seq >= 0 && tcpFrame.tcp.seq <= 0xffffffff, "sequence number out of range");
  }
}

function neverThrows(work: () => void): Outcome {
  try {
    work();
    return OK;
  } catch (error) {
    return typedOutcome(error, { codes: [] });
  }
}

/** Every frame seed in the switch port's framing (each frame's fields moved past its length). */
function framedSeed(frames: readonly Seed[]): Seed {
  const seed = new SeedBuilder();
  for (const frame of frames) {
    const fields = frame.fields.map((field) => ({ ...field, at: field.at + 4 }));
    seed.add(encodeFrames([frame.bytes]), be(0, 4), ...fields);
  }
  return seed.build();
}

const STREAM_SEEDS: readonly Seed[] = [
  framedSeed(FRAME_SEEDS),
  new SeedBuilder()
    .add(encodeFrames([Buffer.alloc(0)]), be(0, 4))
    .add(encodeFrames([FRAME_SEEDS[1]!.bytes]), be(0, 4))
    .build(),
];

/** The port's decoder, each frame through the switch's sensor path (as VirtualSwitch.#forward). */
function switchPort(chunks: readonly Buffer[]): { outcome: Outcome; frames: Buffer[] } {
  const decoder = new FrameDecoder();
  const monitor = new TrafficMonitor({ trafficLog: { maxEntries: 16 }, maxFlows: 8 });
  const macs = new Set<number>();
  const frames: Buffer[] = [];
  let t = 0;
  const onFrame = (frame: Buffer): void => {
    check(frame.length <= MAX_FRAME_LENGTH, "frame above the limit");
    frames.push(frame);
    if (frame.length < 14) return;
    if (!isGroupMac(frame, 6)) macs.add(macKey(frame, 6));
    const to = isGroupMac(frame, 0) || !macs.has(macKey(frame, 0)) ? undefined : "vm-b";
    monitor.record(frame, "vm-a", to, (t += 1));
    parseEverything(frame);
  };
  try {
    for (const chunk of chunks) decoder.decode(chunk, onFrame);
    monitor.flows(t);
    monitor.trafficLog(t);
    return { outcome: OK, frames };
  } catch (error) {
    const outcome = typedOutcome(error, { codes: ["FRAME_TOO_LARGE", "FRAME_DECODER_FAILED"] });
    try {
      decoder.decode(Buffer.alloc(4), onFrame);
    } catch (again) {
      check(
        again instanceof HrError && again.code === "FRAME_DECODER_FAILED",
        "a failed decoder changed its error",
      );
      return { outcome, frames };
    }
    throw new FuzzFailure("a failed frame decoder accepted more input");
  }
}

function pcapSeed(littleEndian: boolean, nanoseconds: boolean): Seed {
  const frames = [FRAME_SEEDS[0]!.bytes, FRAME_SEEDS[4]!.bytes, Buffer.alloc(0)];
  const header = encodePcapHeader();
  const w32 = (buffer: Buffer, value: number, at: number): number =>
    littleEndian ? buffer.writeUInt32LE(value, at) : buffer.writeUInt32BE(value, at);
  w32(header, nanoseconds ? MAGIC_NANOSECONDS : 0xa1b2c3d4, 0);
  if (!littleEndian) {
    header.writeUInt16BE(2, 4);
    header.writeUInt16BE(4, 6);
    w32(header, 262144, 16);
    w32(header, 1, 20);
  }
  const field = (at: number, width: 2 | 4): LengthField => (littleEndian ? le(at, width) : be(at, width));
  const seed = new SeedBuilder().add(header, field(4, 2), field(16, 4), field(20, 4));
  frames.forEach((frame, i) => {
    const record = encodePcapRecord(frame, 1700000000123.456 + i);
    if (!littleEndian) for (let at = 0; at < 16; at += 4) record.writeUInt32BE(record.readUInt32LE(at), at);
    seed.add(record, field(4, 4), field(8, 4), field(12, 4));
  });
  return seed.build();
}

const PCAP_SEEDS = [pcapSeed(true, false), pcapSeed(false, true), pcapSeed(true, true)];

function readPcap(chunks: readonly Buffer[]): { outcome: Outcome; records: number } {
  const decoder = new PcapDecoder();
  let records = 0;
  try {
    for (const chunk of chunks) {
      for (const record of decoder.push(chunk)) {
        check(record.data.length <= MAX_RECORD_LENGTH, "record above the limit");
        check(Number.isFinite(record.timeMs), "record time is not finite");
        records += 1;
      }
    }
  } catch (error) {
    return { outcome: typedOutcome(error, { codes: ["PCAP_INVALID"] }), records };
  }
  return { outcome: decoder.header === undefined || decoder.buffered > 0 ? "PCAP_INVALID" : OK, records };
}

const u32 = fc.oneof(
  fc.constantFrom(0, 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff),
  fc.integer({ min: 0, max: 0xffffffff }),
);

const flowSegment: fc.Arbitrary<FlowSegment> = fc.record(
  {
    srcIp: fc.oneof(fc.constantFrom("10.77.0.1", "10.77.0.2", "10.77.0.3"), fc.ipV4()),
    srcPort: fc.oneof(fc.constantFrom(80, 34567), fc.nat(65535)),
    dstIp: fc.oneof(fc.constantFrom("10.77.0.1", "10.77.0.2"), fc.ipV4()),
    dstPort: fc.oneof(fc.constantFrom(80, 34567), fc.nat(65535)),
    seq: u32,
    ack: u32,
    flags: fc.nat(0x1ff),
    payloadLength: fc.oneof(fc.constantFrom(0, 1, 1460), fc.nat(0xffff)),
    fromVm: fc.constantFrom("vm-a", "vm-b"),
    toVm: fc.constantFrom("vm-a", "vm-b"),
  },
  { requiredKeys: ["srcIp", "srcPort", "dstIp", "dstPort", "seq", "ack", "flags", "payloadLength"] },
);

interface FlowSteps {
  maxFlows: number;
  steps: { segment: FlowSegment; dt: number; reload: boolean }[];
}

function runFlows(input: FlowSteps): Outcome {
  return neverThrows(() => {
    const table = new FlowTable({ maxFlows: input.maxFlows });
    let t = 1_700_000_000_000;
    for (const { segment, dt, reload } of input.steps) {
      t += dt;
      const seen = table.observe(segment, t);
      check(seen.key === flowKey(segment.srcIp, segment.srcPort, segment.dstIp, segment.dstPort), "flow key");
      const hasSequence = segment.payloadLength > 0 || (segment.flags & (TCP_SYN | TCP_FIN)) !== 0;
      check(!seen.retransmission || hasSequence, "a segment without sequence space counted as resent");
      check(table.size <= input.maxFlows, "flow table above its bound");
      const flow = table.get(seen.key);
      for (const stats of flow === undefined ? [] : [flow.ab, flow.ba]) {
        const seqEnd = stats.seqEnd ?? 0;
        check(Number.isInteger(seqEnd) && seqEnd >= 0 && seqEnd <= 0xffffffff, "seqEnd is not a u32");
      }
      if (reload) table.load(table.flows());
    }
  });
}

export const NET_TARGETS: FuzzTarget[] = [
  defineTarget({
    name: "net-packet",
    about:
      "parseEthernet / parseIpv4 / parseTcp / parseArp / parseTcpFrame and the checksums: mutated frames (never throw)",
    arbitrary: fuzzBytes(FRAME_SEEDS, 128),
    hugeLengths: withHugeLengths(FRAME_SEEDS),
    run: (frame: Buffer) => neverThrows(() => parseEverything(frame)),
  }),
  defineTarget({
    name: "net-switch-port",
    about:
      "FrameDecoder in chunks (same frames as whole), each frame through MAC learning, TrafficMonitor and the flow table",
    arbitrary: chunked(fuzzBytes(STREAM_SEEDS)),
    hugeLengths: chunked(withHugeLengths(STREAM_SEEDS)),
    run: (input: Chunked) => {
      const whole = switchPort([input.bytes]);
      const split = switchPort(chunksOf(input));
      check(whole.outcome === split.outcome, `whole input gave ${whole.outcome}, in chunks ${split.outcome}`);
      check(Buffer.concat(whole.frames).equals(Buffer.concat(split.frames)), "chunking changed the frames");
      check(whole.frames.length === split.frames.length, "chunking changed the frame count");
      return whole.outcome;
    },
  }),
  defineTarget({
    name: "net-pcap",
    about:
      "parsePcap and PcapDecoder in chunks (same result): mutated pcap files, both byte orders, µs and ns",
    arbitrary: chunked(fuzzBytes(PCAP_SEEDS)),
    hugeLengths: chunked(withHugeLengths(PCAP_SEEDS)),
    run: (input: Chunked) => {
      let whole: Outcome;
      try {
        parsePcap(input.bytes);
        whole = OK;
      } catch (error) {
        whole = typedOutcome(error, { codes: ["PCAP_INVALID"] });
      }
      const split = readPcap(chunksOf(input));
      check(whole === split.outcome, `parsePcap gave ${whole}, PcapDecoder in chunks ${split.outcome}`);
      return whole;
    },
  }),
  defineTarget({
    name: "net-flow-table",
    about:
      "FlowTable.observe: random parsed segments (wrapping sequence numbers, any flags), saved and loaded",
    arbitrary: fc.record({
      maxFlows: fc.integer({ min: 1, max: 6 }),
      steps: fc.array(
        fc.record({
          segment: flowSegment,
          dt: fc.integer({ min: -1000, max: 100_000 }),
          reload: fc.boolean(),
        }),
        { maxLength: 40 },
      ),
    }),
    run: runFlows,
  }),
];
