import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ARP_REPLY, ARP_REQUEST, parseArp, writeArp } from "../../../src/net/arp.ts";
import { internetChecksum } from "../../../src/net/checksum.ts";
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, parseEthernet, writeEthernet } from "../../../src/net/ethernet.ts";
import { ipv4ChecksumOk, parseIpv4, PROTOCOL_TCP, writeIpv4 } from "../../../src/net/ipv4.ts";
import {
  formatMac,
  isGroupMac,
  macKey,
  macKeyToString,
  parseMac,
  tryParseMac,
} from "../../../src/net/mac.ts";
import { buildTcpFrame, parseTcpFrame } from "../../../src/net/packet.ts";
import {
  parseTcp,
  sequenceLength,
  TCP_ACK,
  TCP_PSH,
  TCP_SYN,
  tcpChecksumOk,
  tcpFlagNames,
  writeTcp,
} from "../../../src/net/tcp.ts";
import { isHrError } from "../../../src/util/errors.ts";

// A Linux-style SYN (MSS, SACK-permitted, timestamps, window scale), 10.77.0.1:34567 -> 10.77.0.2:80.
// Its checksums (IPv4 0x09da, TCP 0x662d) were computed by an independent Python implementation.
const SYN_HEX = [
  "525400770002525400770001" + "0800", // Ethernet: dst, src, IPv4
  "4500003c1c464000400609da0a4d00010a4d0002", // IPv4: 60 bytes, id 0x1c46, DF, TTL 64, TCP
  "8707005012345678" + "00000000a002faf0662d0000", // TCP: ports, seq, ack, offset 10, SYN, window, checksum
  "020405b40402080a0001e2400000000001030307", // TCP options
].join("");
const SYN = Buffer.from(SYN_HEX, "hex");
const SYN_OPTIONS = Buffer.from("020405b40402080a0001e2400000000001030307", "hex");

// RFC 1071-style checksum written differently from src/net/checksum.ts (sum as BigInt, fold at end).
function referenceChecksum(data: Buffer): number {
  let sum = 0n;
  for (let i = 0; i < data.length; i += 2) sum += BigInt(data.readUInt8(i) * 256 + (data[i + 1] ?? 0));
  while (sum > 0xffffn) sum = (sum & 0xffffn) + (sum >> 16n);
  return Number(~sum & 0xffffn);
}

describe("MAC helpers", () => {
  it("formats, parses and keys MAC addresses", () => {
    const mac = parseMac("52:54:00:77:00:0A");
    assert.equal(formatMac(mac), "52:54:00:77:00:0a");
    assert.equal(macKeyToString(macKey(mac)), "52:54:00:77:00:0a");
    assert.deepEqual(tryParseMac("52-54-00-77-00-0a"), mac);
    assert.equal(tryParseMac("52:54:00:77:00"), undefined);
    assert.equal(tryParseMac("52:54-00:77:00:0a"), undefined);
    assert.throws(
      () => parseMac("nope"),
      (error) => isHrError(error, "MAC_INVALID"),
    );
    assert.equal(isGroupMac(parseMac("ff:ff:ff:ff:ff:ff")), true);
    assert.equal(isGroupMac(parseMac("33:33:00:00:00:16")), true);
    assert.equal(isGroupMac(mac), false);
  });
});

describe("checksums", () => {
  it("matches the classic IPv4 header example (checksum 0xb861)", () => {
    const header = Buffer.from("450000730000400040110000c0a80001c0a800c7", "hex");
    assert.equal(internetChecksum(header), 0xb861);
    header.writeUInt16BE(0xb861, 10);
    assert.equal(ipv4ChecksumOk(header), true);
  });

  it("agrees with a reference implementation on odd and even lengths", () => {
    for (let length = 0; length < 80; length++) {
      const data = Buffer.alloc(length);
      for (let i = 0; i < length; i++) data[i] = (i * 37 + 11) & 0xff;
      assert.equal(internetChecksum(data), referenceChecksum(data), `length ${length}`);
    }
  });
});

describe("parsing a known-good SYN frame", () => {
  const parsed = parseTcpFrame(SYN);

  it("reads every layer", () => {
    assert.ok(parsed);
    assert.equal(parsed.ethernet.dst, "52:54:00:77:00:02");
    assert.equal(parsed.ethernet.src, "52:54:00:77:00:01");
    assert.equal(parsed.ethernet.etherType, ETHERTYPE_IPV4);
    assert.equal(parsed.ip.src, "10.77.0.1");
    assert.equal(parsed.ip.dst, "10.77.0.2");
    assert.equal(parsed.ip.id, 0x1c46);
    assert.equal(parsed.ip.dontFragment, true);
    assert.equal(parsed.ip.checksum, 0x09da);
    assert.equal(parsed.tcp.srcPort, 34567);
    assert.equal(parsed.tcp.dstPort, 80);
    assert.equal(parsed.tcp.seq, 0x12345678);
    assert.equal(parsed.tcp.headerLength, 40);
    assert.deepEqual(tcpFlagNames(parsed.tcp.flags), ["SYN"]);
    assert.equal(parsed.tcp.window, 64240);
    assert.equal(parsed.tcp.checksum, 0x662d);
    assert.deepEqual(parsed.tcp.options, SYN_OPTIONS);
    assert.equal(sequenceLength(parsed.tcp), 1);
  });

  it("verifies both checksums", () => {
    assert.ok(parsed);
    assert.equal(ipv4ChecksumOk(parsed.ethernet.payload), true);
    assert.equal(tcpChecksumOk("10.77.0.1", "10.77.0.2", parsed.ip.payload), true);
    const corrupted = Buffer.from(parsed.ip.payload);
    corrupted[5] = (corrupted[5] ?? 0) ^ 1;
    assert.equal(tcpChecksumOk("10.77.0.1", "10.77.0.2", corrupted), false);
  });

  it("is rebuilt byte for byte by the writers", () => {
    const rebuilt = buildTcpFrame({
      srcMac: "52:54:00:77:00:01",
      dstMac: "52:54:00:77:00:02",
      srcIp: "10.77.0.1",
      dstIp: "10.77.0.2",
      ipId: 0x1c46,
      srcPort: 34567,
      dstPort: 80,
      seq: 0x12345678,
      flags: TCP_SYN,
      window: 64240,
      tcpOptions: SYN_OPTIONS,
    });
    assert.equal(rebuilt.toString("hex"), SYN_HEX);
  });

  it("computes the TCP checksum of an odd-length data segment like the reference (0x47eb)", () => {
    const segment = writeTcp(
      {
        srcIp: "10.77.0.2",
        dstIp: "10.77.0.1",
        srcPort: 80,
        dstPort: 34567,
        seq: 0xfffffff0,
        ack: 0x12345679,
        flags: TCP_PSH | TCP_ACK,
        window: 502,
      },
      Buffer.from("hello, world!"),
    );
    assert.equal(segment.readUInt16BE(16), 0x47eb);
  });
});

describe("round trips", () => {
  it("Ethernet with and without an 802.1Q tag", () => {
    const payload = Buffer.from("abc");
    const plain = writeEthernet(
      { dst: "ff:ff:ff:ff:ff:ff", src: "52:54:00:00:00:01", etherType: 0x88b5 },
      payload,
    );
    assert.deepEqual(parseEthernet(plain), {
      dst: "ff:ff:ff:ff:ff:ff",
      src: "52:54:00:00:00:01",
      etherType: 0x88b5,
      vlan: undefined,
      headerLength: 14,
      payload,
    });
    const vlan = { priority: 5, dropEligible: true, id: 42 };
    const tagged = writeEthernet(
      { dst: "52:54:00:00:00:02", src: "52:54:00:00:00:01", etherType: 0x0800, vlan },
      payload,
    );
    const parsed = parseEthernet(tagged);
    assert.deepEqual(parsed?.vlan, vlan);
    assert.equal(parsed?.etherType, 0x0800);
    assert.deepEqual(parsed?.payload, payload);
  });

  it("IPv4 with options, fragments and Ethernet padding after the packet", () => {
    const options = Buffer.from([0x94, 0x04, 0x00, 0x00]); // router alert
    const packet = writeIpv4(
      {
        src: "192.168.0.1",
        dst: "10.0.0.255",
        protocol: 17,
        ttl: 3,
        id: 7,
        tos: 0x10,
        options,
        fragmentOffset: 16,
        moreFragments: true,
        dontFragment: false,
      },
      Buffer.from("payload"),
    );
    assert.equal(ipv4ChecksumOk(packet), true);
    const parsed = parseIpv4(Buffer.concat([packet, Buffer.alloc(10)]));
    assert.ok(parsed);
    assert.equal(parsed.headerLength, 24);
    assert.deepEqual(parsed.options, options);
    assert.equal(parsed.payload.toString(), "payload");
    assert.equal(parsed.fragmentOffset, 16);
    assert.equal(parsed.moreFragments, true);
    assert.equal(parsed.dontFragment, false);
    assert.equal(parsed.ttl, 3);
    assert.equal(parsed.tos, 0x10);
    assert.throws(
      () => writeIpv4({ src: "1.2.3", dst: "1.2.3.4", protocol: 6 }, Buffer.alloc(0)),
      (error) => isHrError(error, "IPV4_INVALID"),
    );
  });

  it("TCP inside IPv4 with options on both, and 32-bit sequence numbers", () => {
    const frame = buildTcpFrame(
      {
        srcMac: "52:54:00:00:00:01",
        dstMac: "52:54:00:00:00:02",
        vlan: { priority: 0, dropEligible: false, id: 7 },
        srcIp: "10.0.0.1",
        dstIp: "10.0.0.2",
        ipOptions: Buffer.from([1, 1, 1, 0]),
        srcPort: 1,
        dstPort: 65535,
        seq: 0xffffffff,
        ack: 0x80000000,
        flags: TCP_ACK | 0x100,
        tcpOptions: Buffer.from([1, 1, 1, 1]),
      },
      Buffer.from("x"),
    );
    const parsed = parseTcpFrame(frame);
    assert.ok(parsed);
    assert.equal(parsed.ethernet.vlan?.id, 7);
    assert.equal(parsed.ip.headerLength, 24);
    assert.equal(parsed.tcp.headerLength, 24);
    assert.equal(parsed.tcp.seq, 0xffffffff);
    assert.equal(parsed.tcp.ack, 0x80000000);
    assert.deepEqual(tcpFlagNames(parsed.tcp.flags), ["ACK", "NS"]);
    assert.equal(parsed.tcp.payload.toString(), "x");
    assert.equal(tcpChecksumOk("10.0.0.1", "10.0.0.2", parsed.ip.payload), true);
    assert.equal(ipv4ChecksumOk(parsed.ethernet.payload), true);
    assert.equal(parsed.ip.protocol, PROTOCOL_TCP);
  });

  it("ARP request and reply", () => {
    for (const operation of [ARP_REQUEST, ARP_REPLY]) {
      const arp = {
        operation,
        senderMac: "52:54:00:77:00:01",
        senderIp: "10.77.0.1",
        targetMac: "00:00:00:00:00:00",
        targetIp: "10.77.0.2",
      };
      const frame = writeEthernet(
        { dst: "ff:ff:ff:ff:ff:ff", src: arp.senderMac, etherType: ETHERTYPE_ARP },
        writeArp(arp),
      );
      assert.equal(frame.length, 42);
      const ethernet = parseEthernet(frame);
      assert.ok(ethernet);
      assert.deepEqual(parseArp(ethernet.payload), arp);
    }
  });

  it("parseTcp is undefined for a data offset beyond the segment or below 5", () => {
    const segment = writeTcp(
      { srcIp: "1.1.1.1", dstIp: "2.2.2.2", srcPort: 1, dstPort: 2, seq: 0, flags: TCP_SYN },
      Buffer.alloc(0),
    );
    segment[12] = 0x60;
    assert.equal(parseTcp(segment), undefined);
    segment[12] = 0x40;
    assert.equal(parseTcp(segment), undefined);
  });
});
