import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { BROADCAST_MAC } from "../../../src/net/mac.ts";
import { buildTcpFrame } from "../../../src/net/packet.ts";
import { parsePcap } from "../../../src/net/pcap.ts";
import { VirtualSwitch } from "../../../src/net/switch.ts";
import { TCP_ACK, TCP_SYN } from "../../../src/net/tcp.ts";
import { isHrError } from "../../../src/util/errors.ts";
import { frame, mac, SwitchHarness, tagOf } from "./fake-qemu.ts";

const harnesses: SwitchHarness[] = [];

async function harness(ports: string[], options: Parameters<typeof SwitchHarness.start>[1] = {}) {
  const h = await SwitchHarness.start(ports, options);
  harnesses.push(h);
  return h;
}

after(async () => {
  await Promise.all(harnesses.map((h) => h.close()));
});

const hasCode = (code: string) => (error: unknown) => isHrError(error, code);

describe("VirtualSwitch forwarding", () => {
  it("floods broadcast and unknown unicast, forwards learned unicast to one port", async () => {
    const h = await harness(["a", "b", "c"]);
    const [a, b, c] = [await h.connect("a"), await h.connect("b"), await h.connect("c")];
    a.send(frame(mac(1), BROADCAST_MAC, "hello"));
    await b.waitFrames(1);
    await c.waitFrames(1);
    b.send(frame(mac(2), mac(1), "reply"));
    await a.waitFrames(1);
    c.send(frame(mac(3), BROADCAST_MAC, "sentinel"));
    a.send(frame(mac(1), mac(99), "unknown"));
    await a.waitFrames(2);
    await b.waitFrames(3);
    await c.waitFrames(2);
    assert.deepEqual(a.frames.map(tagOf), ["reply", "sentinel"]);
    assert.deepEqual(b.frames.map(tagOf), ["hello", "sentinel", "unknown"]);
    assert.deepEqual(c.frames.map(tagOf), ["hello", "unknown"]);

    const traffic = h.sw.traffic().sort((x, y) => `${x.from}${x.to}`.localeCompare(`${y.from}${y.to}`));
    assert.deepEqual(
      traffic.map(({ from, to, frames }) => [from, to, frames]),
      [
        ["a", "*", 2],
        ["b", "a", 1],
        ["c", "*", 1],
      ],
    );
    assert.equal(traffic[1]?.bytes, 19);
    assert.deepEqual(
      h.sw.macTable().sort((x, y) => x.mac.localeCompare(y.mac)),
      [
        { mac: mac(1), port: "a" },
        { mac: mac(2), port: "b" },
        { mac: mac(3), port: "c" },
      ],
    );
    const portA = h.sw.port("a");
    assert.deepEqual([portA.counters.rxFrames, portA.counters.txFrames], [2, 2]);
    assert.deepEqual(portA.macs, [mac(1)]);
    assert.equal(portA.connected, true);
  });

  it("re-learns a MAC that moves to another port and keeps forwarding", async () => {
    const h = await harness(["a", "b", "c"]);
    const [a, b, c] = [await h.connect("a"), await h.connect("b"), await h.connect("c")];
    const moves: unknown[] = [];
    h.sw.on("mac-moved", (move) => moves.push(move));
    a.send(frame(mac(1), BROADCAST_MAC, "from-a"));
    await c.waitFrames(1);
    b.send(frame(mac(1), BROADCAST_MAC, "from-b"));
    await c.waitFrames(2);
    c.send(frame(mac(3), mac(1), "to-moved"));
    await b.waitFrames(2);
    assert.deepEqual(b.frames.map(tagOf), ["from-a", "to-moved"]);
    assert.deepEqual(a.frames.map(tagOf), ["from-b"]);
    assert.deepEqual(moves, [{ mac: mac(1), from: "a", to: "b" }]);
  });

  it("counts runt frames and frames addressed back to their own port, forwarding neither", async () => {
    const h = await harness(["a", "b"]);
    const [a, b] = [await h.connect("a"), await h.connect("b")];
    a.send(Buffer.alloc(10), frame(mac(1), BROADCAST_MAC, "learn"), frame(mac(1), mac(1), "hairpin"));
    a.send(frame(mac(1), BROADCAST_MAC, "sentinel"));
    await b.waitFrames(2);
    assert.deepEqual(b.frames.map(tagOf), ["learn", "sentinel"]);
    const counters = h.sw.port("a").counters;
    assert.deepEqual([counters.rxMalformed, counters.rxFiltered, counters.rxFrames], [1, 1, 4]);
  });

  it("tracks TCP flows with the port of each end and logs the traffic", async () => {
    const h = await harness(["a", "b"]);
    const [a, b] = [await h.connect("a"), await h.connect("b")];
    const ends = {
      srcMac: mac(1),
      dstMac: mac(2),
      srcIp: "10.77.0.1",
      dstIp: "10.77.0.2",
      srcPort: 40000,
      dstPort: 80,
    };
    b.send(frame(mac(2), BROADCAST_MAC, "learn"));
    await a.waitFrames(1);
    a.send(buildTcpFrame({ ...ends, seq: 100, flags: TCP_SYN }));
    await b.waitFrames(1);
    const back = {
      srcMac: mac(2),
      dstMac: mac(1),
      srcIp: "10.77.0.2",
      dstIp: "10.77.0.1",
      srcPort: 80,
      dstPort: 40000,
    };
    b.send(buildTcpFrame({ ...back, seq: 900, ack: 101, flags: TCP_SYN | TCP_ACK }));
    await a.waitFrames(2);
    const flows = h.sw.flows();
    assert.equal(flows.length, 1);
    const flow = flows[0];
    assert.ok(flow);
    assert.equal(flow.key, "tcp/10.77.0.1:40000-10.77.0.2:80");
    assert.deepEqual(flow.a, { ip: "10.77.0.1", port: 40000, vm: "a" });
    assert.deepEqual(flow.b, { ip: "10.77.0.2", port: 80, vm: "b" });
    assert.equal(flow.initiator, "a");
    assert.equal(flow.ab.seqEnd, 101);
    assert.equal(flow.ba.highestAck, 101);
    const log = h.sw.trafficLog();
    assert.deepEqual(
      log.map((entry) => [entry.from, entry.to, entry.tcp?.flags]),
      [
        ["b", "*", undefined],
        ["a", "b", TCP_SYN],
        ["b", "a", TCP_SYN | TCP_ACK],
      ],
    );
    assert.equal(log[1]?.tcp?.flowKey, flow.key);
    assert.equal(log[2]?.tcp?.ack, 101);
    const viaJson = JSON.parse(JSON.stringify(flows)) as typeof flows;
    assert.deepEqual(viaJson[0]?.ab, JSON.parse(JSON.stringify(flow.ab)));
  });

  it("captures both directions of a port to a pcap file", async () => {
    const h = await harness(["a", "b"]);
    const [a, b] = [await h.connect("a"), await h.connect("b")];
    const file = join(h.dir, "a.pcap");
    await h.sw.startCapture("a", file);
    assert.equal(h.sw.port("a").capture, file);
    a.send(frame(mac(1), BROADCAST_MAC, "out"));
    await b.waitFrames(1);
    b.send(frame(mac(2), mac(1), "in"));
    await a.waitFrames(1);
    await h.sw.stopCapture("a");
    const { header, records } = parsePcap(await readFile(file));
    assert.equal(header.linktype, 1);
    assert.deepEqual(
      records.map((record) => tagOf(record.data)),
      ["out", "in"],
    );
    assert.ok(Math.abs((records[0]?.timeMs ?? 0) - Date.now()) < 60_000);
  });

  it("captureAll covers present and future ports", async () => {
    const h = await harness(["a"]);
    const dir = join(h.dir, "captures");
    await h.sw.captureAll(dir);
    await h.sw.addPort("late");
    assert.equal(h.sw.port("late").capture, join(dir, "late.pcap"));
    await h.sw.stopCaptureAll();
    assert.equal(h.sw.port("a").capture, undefined);
    assert.equal((await stat(join(dir, "a.pcap"))).size, 24);
  });
});

describe("VirtualSwitch ports", () => {
  it("creates 0600 sockets, validates names, and removes the sockets on close", async () => {
    const h = await harness(["vm-1"]);
    const path = h.paths.get("vm-1") ?? "";
    assert.equal(path, join(h.dir, "sw", "vm-1.sock"));
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    await assert.rejects(h.sw.addPort("vm-1"), hasCode("SWITCH_PORT_EXISTS"));
    const [first, second] = await Promise.allSettled([h.addPort("twin"), h.addPort("twin")]);
    assert.equal(first.status, "fulfilled");
    assert.ok(second.status === "rejected" && isHrError(second.reason, "SWITCH_PORT_EXISTS"));
    await assert.rejects(h.sw.addPort("../x"), hasCode("SWITCH_PORT_NAME_INVALID"));
    await assert.rejects(h.sw.addPort("*"), hasCode("SWITCH_PORT_NAME_INVALID"));
    assert.throws(() => h.sw.hold("nope"), hasCode("SWITCH_PORT_UNKNOWN"));
    await assert.rejects(h.sw.removePort("nope"), hasCode("SWITCH_PORT_UNKNOWN"));
    await writeFile(join(h.dir, "sw", "file.sock"), "not a socket");
    await assert.rejects(h.sw.addPort("file"), hasCode("SWITCH_SOCKET_IN_USE"));

    const client = await h.connect("vm-1");
    await h.sw.close();
    await client.closed;
    await assert.rejects(stat(path), { code: "ENOENT" });
    await assert.rejects(h.sw.addPort("again"), hasCode("SWITCH_CLOSED"));
  });

  it("refuses a socket path longer than unix sockets allow", async () => {
    const h = await harness([]);
    const deep = new VirtualSwitch({ dir: join(h.dir, "d".repeat(100)) });
    await assert.rejects(deep.addPort("a"), hasCode("SWITCH_SOCKET_PATH_TOO_LONG"));
    await deep.close();
  });

  it("replaces a socket file left by a switch that died", async () => {
    const h = await harness([]);
    const path = join(h.dir, "sw", "stale.sock");
    await mkdir(join(h.dir, "sw"), { recursive: true });
    const child = spawn(process.execPath, [
      "-e",
      `require("net").createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, "SIGKILL"))`,
    ]);
    await once(child, "exit");
    assert.ok((await stat(path)).isSocket());
    assert.equal(await h.addPort("stale"), path);
    const client = await h.connect("stale");
    assert.equal(h.sw.port("stale").connected, true);
    client.close();
  });

  it("removePort closes the connection and forgets the port's MACs", async () => {
    const h = await harness(["a", "b"]);
    const [a, b] = [await h.connect("a"), await h.connect("b")];
    a.send(frame(mac(1), BROADCAST_MAC, "learn"));
    await b.waitFrames(1);
    await h.sw.removePort("a");
    await a.closed;
    assert.deepEqual(h.sw.macTable(), []);
    assert.deepEqual(
      h.sw.ports().map((port) => port.name),
      ["b"],
    );
  });
});
