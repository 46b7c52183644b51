import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseArp } from "../../../src/net/arp.ts";
import { parseEthernet } from "../../../src/net/ethernet.ts";
import { FrameDecoder } from "../../../src/net/frame-stream.ts";
import { parseIpv4 } from "../../../src/net/ipv4.ts";
import { buildTcpFrame, parseTcpFrame } from "../../../src/net/packet.ts";
import { encodePcapHeader, encodePcapRecord, PcapDecoder } from "../../../src/net/pcap.ts";
import { parseTcp, TCP_ACK } from "../../../src/net/tcp.ts";
import { HrError } from "../../../src/util/errors.ts";

/** Deterministic xorshift32, so a failure can be reproduced. */
function randomBytes(seed: number): (length: number) => Buffer {
  let state = seed >>> 0 || 1;
  return (length) => {
    const out = Buffer.alloc(length);
    for (let i = 0; i < length; i++) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      out[i] = state & 0xff;
    }
    return out;
  };
}

function parseAll(input: Buffer): void {
  parseEthernet(input);
  parseIpv4(input);
  parseTcp(input);
  parseArp(input);
  parseTcpFrame(input);
}

const VALID = buildTcpFrame(
  {
    srcMac: "52:54:00:00:00:01",
    dstMac: "52:54:00:00:00:02",
    srcIp: "10.0.0.1",
    dstIp: "10.0.0.2",
    ipOptions: Buffer.from([1, 1, 1, 0]),
    srcPort: 1000,
    dstPort: 80,
    seq: 1,
    ack: 2,
    flags: TCP_ACK,
    tcpOptions: Buffer.from([1, 1, 1, 1]),
  },
  Buffer.from("data"),
);

describe("garbage and short input", () => {
  it("every truncation of a valid frame parses to a value or undefined, never a throw", () => {
    for (let length = 0; length <= VALID.length; length++) {
      const prefix = VALID.subarray(0, length);
      assert.doesNotThrow(() => parseAll(prefix), `length ${length}`);
      const ethernetPayload = prefix.subarray(14);
      assert.doesNotThrow(() => parseAll(ethernetPayload));
    }
    assert.equal(parseTcpFrame(VALID.subarray(0, VALID.length - 5)), undefined);
  });

  it("random bytes and random single-byte corruptions never make a parser throw", () => {
    const random = randomBytes(12345);
    for (let round = 0; round < 3000; round++) {
      const length = random(1)[0] ?? 0;
      assert.doesNotThrow(() => parseAll(random(length)));
      const corrupted = Buffer.from(VALID);
      const where = (random(2).readUInt16BE(0) % corrupted.length) | 0;
      corrupted[where] = random(1)[0] ?? 0;
      assert.doesNotThrow(() => parseAll(corrupted));
      assert.doesNotThrow(() => parseAll(corrupted.subarray(14)));
    }
  });

  it("stream decoders fail on random input with HrError only", () => {
    const random = randomBytes(777);
    for (let round = 0; round < 500; round++) {
      const input = random(1 + (random(1)[0] ?? 0) * 4);
      for (const decoder of [new FrameDecoder(), new PcapDecoder()]) {
        try {
          decoder.push(input);
        } catch (error) {
          assert.ok(error instanceof HrError, `unexpected ${String(error)}`);
        }
      }
    }
  });

  it("a pcap decoder rejects a record length above its limit before allocating", () => {
    const record = encodePcapRecord(Buffer.alloc(10), 0);
    record.writeUInt32LE(0xffffffff, 8);
    const decoder = new PcapDecoder();
    assert.throws(
      () => decoder.push(Buffer.concat([encodePcapHeader(), record])),
      (error) => error instanceof HrError && error.code === "PCAP_INVALID",
    );
  });
});
