import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { FlowTable, flowKey, type FlowSegment } from "../../../src/net/flows.ts";
import { seqAfter, seqMax } from "../../../src/net/seq.ts";
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN } from "../../../src/net/tcp.ts";

const CLIENT = { ip: "10.77.0.2", port: 40000 };
const SERVER = { ip: "10.77.0.1", port: 80 };

function fromClient(seq: number, ack: number, flags: number, payloadLength = 0): FlowSegment {
  return {
    srcIp: CLIENT.ip,
    srcPort: CLIENT.port,
    dstIp: SERVER.ip,
    dstPort: SERVER.port,
    seq,
    ack,
    flags,
    payloadLength,
    fromVm: "vm2",
    toVm: "vm1",
  };
}

function fromServer(seq: number, ack: number, flags: number, payloadLength = 0): FlowSegment {
  return {
    srcIp: SERVER.ip,
    srcPort: SERVER.port,
    dstIp: CLIENT.ip,
    dstPort: CLIENT.port,
    seq,
    ack,
    flags,
    payloadLength,
    fromVm: "vm1",
  };
}

describe("serial arithmetic", () => {
  it("orders sequence numbers across the 2^32 wrap", () => {
    assert.equal(seqAfter(5, 0xfffffff0), true);
    assert.equal(seqAfter(0xfffffff0, 5), false);
    assert.equal(seqAfter(7, 7), false);
    assert.equal(seqMax(0xffffffff, 0), 0);
    assert.equal(seqAfter(0x7fffffff, 0), true);
    assert.equal(seqAfter(0x80000000, 0), false);
  });
});

describe("FlowTable", () => {
  it("keys both directions of a connection alike", () => {
    assert.equal(flowKey("10.77.0.2", 40000, "10.77.0.1", 80), flowKey("10.77.0.1", 80, "10.77.0.2", 40000));
    assert.equal(flowKey("10.77.0.1", 80, "10.77.0.2", 40000), "tcp/10.77.0.1:80-10.77.0.2:40000");
  });

  it("follows a handshake, data, ACKs and close, with ports and the initiator", () => {
    const table = new FlowTable();
    const syn = table.observe(fromClient(1000, 0, TCP_SYN), 1);
    assert.equal(syn.newFlow, true);
    assert.equal(syn.progress, true);
    assert.equal(syn.direction, "ba");
    table.observe(fromServer(5000, 1001, TCP_SYN | TCP_ACK), 2);
    table.observe(fromClient(1001, 5001, TCP_ACK), 3);
    const data = table.observe(fromClient(1001, 5001, TCP_ACK | TCP_PSH, 100), 4);
    assert.deepEqual([data.progress, data.retransmission], [true, false]);
    const ack = table.observe(fromServer(5001, 1101, TCP_ACK), 5);
    assert.deepEqual([ack.progress, ack.retransmission], [true, false]);
    const dupAck = table.observe(fromServer(5001, 1101, TCP_ACK), 6);
    assert.equal(dupAck.progress, false);
    table.observe(fromClient(1101, 5001, TCP_ACK | TCP_FIN), 7);

    const flow = table.get(syn.key);
    assert.ok(flow);
    assert.deepEqual(flow.a, { ip: "10.77.0.1", port: 80, vm: "vm1" });
    assert.deepEqual(flow.b, { ip: "10.77.0.2", port: 40000, vm: "vm2" });
    assert.equal(flow.initiator, "b");
    assert.equal(flow.ba.segments, 4);
    assert.equal(flow.ba.payloadBytes, 100);
    assert.equal(flow.ba.seqEnd, 1102);
    assert.equal(flow.ba.highestAck, 5001);
    assert.deepEqual([flow.ba.synSeen, flow.ba.finSeen, flow.ba.rstSeen], [true, true, false]);
    assert.equal(flow.ab.highestAck, 1101);
    assert.equal(flow.ab.retransmissions, 0);
    assert.equal(flow.firstSeen, 1);
    assert.equal(flow.lastSeen, 7);
    assert.equal(flow.lastProgress, 7);
    assert.equal(flow.ab.lastProgress, 5);
    assert.equal(table.flows().length, 1);
  });

  it("counts resent data, a resent SYN, and partial overlap as new data", () => {
    const table = new FlowTable();
    table.observe(fromClient(1000, 0, TCP_SYN), 0);
    assert.equal(table.observe(fromClient(1000, 0, TCP_SYN), 1000).retransmission, true);
    table.observe(fromClient(1001, 1, TCP_ACK, 500), 1001);
    const resent = table.observe(fromClient(1001, 1, TCP_ACK, 500), 1200);
    assert.deepEqual([resent.retransmission, resent.progress], [true, false]);
    const older = table.observe(fromClient(1101, 1, TCP_ACK, 100), 1300);
    assert.equal(older.retransmission, true);
    const overlap = table.observe(fromClient(1401, 1, TCP_ACK, 200), 1400);
    assert.deepEqual([overlap.retransmission, overlap.progress], [false, true]);
    const flow = table.get(overlap.key);
    assert.equal(flow?.ba.retransmissions, 3);
    assert.equal(flow?.ba.lastRetransmission, 1300);
    assert.equal(flow?.ba.seqEnd, 1601);
  });

  it("detects retransmissions and progress across sequence wraparound", () => {
    const table = new FlowTable();
    const start = 0xffffff00;
    table.observe(fromServer(start, 7, TCP_ACK, 0x80), 0);
    const wrapping = table.observe(fromServer(start + 0x80, 7, TCP_ACK, 0x100), 1);
    assert.deepEqual([wrapping.progress, wrapping.retransmission], [true, false]);
    const flow = table.get(wrapping.key);
    assert.equal(flow?.ab.seqEnd, 0x80);
    const resentBeforeWrap = table.observe(fromServer(start + 0x80, 7, TCP_ACK, 0x100), 2);
    assert.equal(resentBeforeWrap.retransmission, true);
    const afterWrap = table.observe(fromServer(0x80, 7, TCP_ACK, 10), 3);
    assert.deepEqual([afterWrap.progress, afterWrap.retransmission], [true, false]);

    table.observe(fromClient(7, 0xfffffff0, TCP_ACK), 4);
    assert.equal(table.observe(fromClient(7, 0x10, TCP_ACK), 5).progress, true);
    assert.equal(table.observe(fromClient(7, 0xfffffff8, TCP_ACK), 6).progress, false);
    assert.equal(table.get(afterWrap.key)?.ba.highestAck, 0x10);
  });

  it("RST takes no sequence space and is not a retransmission", () => {
    const table = new FlowTable();
    table.observe(fromClient(10, 0, TCP_ACK, 5), 0);
    const rst = table.observe(fromClient(15, 0, TCP_RST), 1);
    assert.equal(rst.retransmission, false);
    assert.equal(table.get(rst.key)?.ba.rstSeen, true);
  });

  it("after load() of a saved table, old data resent counts as retransmission, not progress", () => {
    const before = new FlowTable();
    before.observe(fromClient(100, 0, TCP_ACK, 1000), 0);
    const saved = JSON.parse(JSON.stringify(before.flows())) as ReturnType<FlowTable["flows"]>;
    const after = new FlowTable();
    after.load(saved);
    const resent = after.observe(fromClient(600, 0, TCP_ACK, 500), 10);
    assert.deepEqual([resent.newFlow, resent.progress, resent.retransmission], [false, false, true]);
    assert.equal(after.observe(fromClient(1100, 0, TCP_ACK, 1), 20).progress, true);
  });

  it("forgets the least recently seen flow beyond maxFlows", () => {
    const table = new FlowTable({ maxFlows: 2 });
    const segment = (port: number): FlowSegment => ({ ...fromClient(1, 0, TCP_ACK, 1), srcPort: port });
    table.observe(segment(1), 0);
    table.observe(segment(2), 1);
    table.observe(segment(1), 2);
    table.observe(segment(3), 3);
    assert.equal(table.size, 2);
    assert.equal(table.evicted, 1);
    assert.deepEqual(
      table.flows().map((flow) => flow.b.port),
      [1, 3],
    );
  });
});
