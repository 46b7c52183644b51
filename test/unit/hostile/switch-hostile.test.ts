import assert from "node:assert/strict";
import { once } from "node:events";
import { createConnection } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { after, describe, it } from "node:test";
import { ARP_REQUEST, writeArp } from "../../../src/net/arp.ts";
import { writeEthernet } from "../../../src/net/ethernet.ts";
import { BROADCAST_MAC } from "../../../src/net/mac.ts";
import { buildTcpFrame } from "../../../src/net/packet.ts";
import { TCP_SYN } from "../../../src/net/tcp.ts";
import { createRandom } from "../../../src/sim/random.ts";
import { isHrError } from "../../../src/util/errors.ts";
import { frame, mac, SwitchHarness, tagOf, until, type FakeQemu } from "../net/fake-qemu.ts";

/**
 * Issue 7 part 4, the switch: what a hostile guest can put on its port. Ports are bound to their
 * VM's MAC (as a cluster adds them), so a forged source MAC is dropped and cannot move another
 * VM's MAC; the switch has no port facing the host, and unicast to a MAC no VM owns goes nowhere;
 * bad framing costs the sender its connection and nothing else.
 */
const harnesses: SwitchHarness[] = [];
after(async () => {
  await Promise.all(harnesses.map((h) => h.close()));
});

/** Ports a, b, c bound to mac(1), mac(2), mac(3), each with a fake QEMU connected. */
async function boundCluster(): Promise<{ h: SwitchHarness; a: FakeQemu; b: FakeQemu; c: FakeQemu }> {
  const h = await SwitchHarness.start([]);
  harnesses.push(h);
  for (const [index, name] of ["a", "b", "c"].entries()) await h.addPort(name, { mac: mac(index + 1) });
  return { h, a: await h.connect("a"), b: await h.connect("b"), c: await h.connect("c") };
}

/**
 * Floods a "sentinel" frame from `sender` and waits until every other client got it: frames on
 * one path arrive in order, so whatever was sent before it has been delivered (or never will be).
 */
async function settle(
  h: SwitchHarness,
  clients: FakeQemu[],
  sender: FakeQemu,
  senderMac: string,
): Promise<void> {
  const counts = clients.map((client) => client.frames.length);
  sender.send(frame(senderMac, BROADCAST_MAC, "sentinel"));
  await until(() =>
    clients.every(
      (client, index) =>
        client === sender || client.frames.slice(counts[index] ?? 0).some((got) => tagOf(got) === "sentinel"),
    ),
  );
  assert.ok(h.sw.ports().length > 0);
}

describe("switch: forged source MACs", () => {
  it("a guest sending with another VM's MAC is dropped and cannot steal that VM's traffic", async () => {
    const { h, a, b, c } = await boundCluster();
    c.send(frame(mac(1), mac(2), "forged from c as a"));
    c.send(frame(mac(1), BROADCAST_MAC, "forged broadcast from c as a"));
    await settle(h, [a, b, c], c, mac(3));
    b.send(frame(mac(2), mac(1), "for a"));
    await a.waitFrames(2);
    await settle(h, [a, b, c], b, mac(2));
    assert.deepEqual(a.frames.map(tagOf), ["sentinel", "for a", "sentinel"]);
    assert.deepEqual(b.frames.map(tagOf), ["sentinel"]);
    assert.deepEqual(c.frames.map(tagOf), ["sentinel"], "c never received a's traffic");
    assert.equal(h.sw.port("c").counters.rxSpoofed, 2);
    assert.deepEqual(
      h.sw.macTable().sort((x, y) => x.mac.localeCompare(y.mac)),
      [
        { mac: mac(1), port: "a" },
        { mac: mac(2), port: "b" },
        { mac: mac(3), port: "c" },
      ],
    );
  });

  it("broadcast, multicast and zero source MACs are dropped", async () => {
    const { h, a, b, c } = await boundCluster();
    a.send(frame(BROADCAST_MAC, mac(2), "from broadcast"));
    a.send(frame("01:00:5e:00:00:01", mac(2), "from multicast"));
    a.send(frame("00:00:00:00:00:00", mac(2), "from zero"));
    await settle(h, [a, b, c], a, mac(1));
    assert.deepEqual(b.frames.map(tagOf), ["sentinel"]);
    assert.equal(h.sw.port("a").counters.rxSpoofed, 3);
  });

  it("a port that learns (no MAC bound) cannot claim a bound VM's MAC", async () => {
    const { h, a, b, c } = await boundCluster();
    await h.addPort("x");
    const x = await h.connect("x");
    x.send(frame(mac(2), mac(1), "x as b"));
    x.send(frame(mac(9), mac(1), "x as itself"));
    await a.waitFrames(1);
    await settle(h, [a, b, c, x], b, mac(2));
    assert.deepEqual(a.frames.map(tagOf), ["x as itself", "sentinel"]);
    assert.equal(h.sw.port("x").counters.rxSpoofed, 1);
    assert.equal(h.sw.macTable().find((entry) => entry.mac === mac(2))?.port, "b");
  });

  it("binding a MAC already bound, or a group MAC, is refused", async () => {
    const { h } = await boundCluster();
    await assert.rejects(h.addPort("d", { mac: mac(1) }), (error) => isHrError(error, "SWITCH_MAC_IN_USE"));
    await assert.rejects(h.addPort("e", { mac: BROADCAST_MAC }), (error) => isHrError(error, "MAC_INVALID"));
    await assert.rejects(h.addPort("f", { mac: "52:54:00:zz:00:01" }), (error) =>
      isHrError(error, "MAC_INVALID"),
    );
    assert.deepEqual(
      h.sw.ports().map((port) => port.name),
      ["a", "b", "c"],
    );
  });
});

describe("switch: a guest cannot reach the host", () => {
  it("has no port but the VMs', and unicast to a MAC no VM owns (a host, a gateway) goes nowhere", async () => {
    const { h, a, b, c } = await boundCluster();
    assert.deepEqual(
      h.sw.ports().map((port) => port.name),
      ["a", "b", "c"],
    );
    const toGateway = buildTcpFrame({
      srcMac: mac(1),
      dstMac: "52:54:00:12:34:56",
      srcIp: "10.0.0.2",
      dstIp: "10.0.0.1",
      srcPort: 40000,
      dstPort: 22,
      seq: 1,
      flags: TCP_SYN,
    });
    a.send(toGateway, frame(mac(1), "fe:ff:ff:ff:ff:ff", "to the host's usual MAC"));
    // ARP for the host's address is a broadcast: only the other VMs see it, and none is the host.
    const arp = writeArp({
      operation: ARP_REQUEST,
      senderMac: mac(1),
      senderIp: "10.0.0.2",
      targetMac: "00:00:00:00:00:00",
      targetIp: "10.0.0.1",
    });
    a.send(writeEthernet({ dst: BROADCAST_MAC, src: mac(1), etherType: 0x0806 }, arp));
    await b.waitFrames(1);
    await c.waitFrames(1);
    await settle(h, [a, b, c], a, mac(1));
    assert.deepEqual(
      b.frames.map((received) => received.readUInt16BE(12)),
      [0x0806, 0x88b5],
    );
    assert.equal(c.frames.length, 2);
    assert.equal(a.frames.length, 0, "nothing answers for the host");
    assert.equal(h.sw.port("a").counters.rxUnknownDst, 2);
  });
});

describe("switch: framing from a hostile guest", () => {
  it("counts frames shorter than an Ethernet header and keeps forwarding", async () => {
    const { h, a, b, c } = await boundCluster();
    a.send(Buffer.alloc(0), Buffer.alloc(1, 0xff), Buffer.alloc(13, 0x01));
    await settle(h, [a, b, c], a, mac(1));
    assert.equal(h.sw.port("a").counters.rxMalformed, 3);
    assert.equal(h.sw.port("a").counters.protocolErrors, 0);
  });

  it("an oversized length disconnects only that port, which can connect again", async () => {
    const { h, a, b, c } = await boundCluster();
    const length = Buffer.alloc(4);
    length.writeUInt32BE(0xffffffff);
    c.socket.write(length);
    await c.closed;
    assert.equal(h.sw.port("c").counters.protocolErrors, 1);
    await settle(h, [a, b], a, mac(1));
    const again = await h.connect("c");
    b.send(frame(mac(2), mac(3), "after reconnect"));
    await again.waitFrames(1);
    assert.deepEqual(again.frames.map(tagOf), ["after reconnect"]);
  });

  it("a length just above QEMU's buffer is refused before anything is buffered", async () => {
    const { h } = await boundCluster();
    const path = h.paths.get("b") ?? "";
    const socket = createConnection(path);
    await once(socket, "connect");
    const header = Buffer.alloc(4);
    header.writeUInt32BE(4096 + 65536 + 1);
    socket.write(header);
    await once(socket, "close");
    await until(() => h.sw.port("b").counters.protocolErrors === 1);
  });

  it("5,000 seeded random frames from a guest's own MAC crash nothing and leave forwarding intact", async () => {
    const { h, a, b, c } = await boundCluster();
    const random = createRandom(4);
    const etherTypes = [0x0800, 0x0806, 0x86dd, 0x8100, 0x88b5];
    const frames: Buffer[] = [];
    for (let n = 0; n < 5000; n++) {
      const bytes = Buffer.alloc(14 + Math.floor(random() * 1600));
      for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(random() * 256);
      Buffer.from(mac(1).replaceAll(":", ""), "hex").copy(bytes, 6);
      bytes.writeUInt16BE(etherTypes[Math.floor(random() * etherTypes.length)] ?? 0x0800, 12);
      if (random() < 0.5) Buffer.from(mac(2).replaceAll(":", ""), "hex").copy(bytes, 0);
      frames.push(bytes);
    }
    for (let at = 0; at < frames.length; at += 100) {
      a.send(...frames.slice(at, at + 100));
      await sleep(1);
    }
    await until(() => h.sw.port("a").counters.rxFrames === 5000, 20_000);
    await settle(h, [a, b, c], a, mac(1));
    const toB = frames.filter((sent) => sent.readUIntBE(0, 6) === parseInt(mac(2).replaceAll(":", ""), 16));
    const flooded = frames.filter((sent) => (sent[0] ?? 0) & 1);
    assert.equal(h.sw.port("b").counters.dropsBackpressure, 0);
    assert.equal(b.frames.length, toB.length + flooded.length + 1);
    assert.equal(h.sw.port("a").counters.protocolErrors, 0);
  });
});
