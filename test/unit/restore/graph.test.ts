import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { ARP_REPLY, writeArp } from "../../../src/net/arp.ts";
import { ETHERTYPE_ARP, writeEthernet } from "../../../src/net/ethernet.ts";
import { buildTcpFrame } from "../../../src/net/packet.ts";
import { TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN } from "../../../src/net/tcp.ts";
import { TrafficMonitor } from "../../../src/net/traffic-monitor.ts";
import {
  buildDependencyGraph,
  condenseGraph,
  type DependencyGraphInput,
  type InflightFrameInput,
} from "../../../src/restore/cluster/graph.ts";

/** VM vmN has MAC 52:54:00:77:00:0N and IP 10.77.0.N. */
const mac = (vm: string): string => `52:54:00:77:00:${vm.slice(2).padStart(2, "0")}`;
const ip = (vm: string): string => `10.77.0.${vm.slice(2)}`;

/** A switch's sensor fed with real frames, so flows and log are what a snapshot stores. */
class Lab {
  readonly monitor = new TrafficMonitor();
  readonly vms: string[];
  readonly inflight: InflightFrameInput[] = [];
  t = 0;

  constructor(...vms: string[]) {
    this.vms = vms;
  }

  record(from: string, to: string | undefined, frame: Buffer): void {
    this.t += 1;
    this.monitor.record(frame, from, to, this.t);
  }

  input(overrides: Partial<DependencyGraphInput> = {}): DependencyGraphInput {
    const flows = this.monitor.flows(this.t);
    const log = this.monitor.trafficLog(this.t);
    return { vms: this.vms, flows, log, inflight: this.inflight, ...overrides };
  }

  graph(overrides: Partial<DependencyGraphInput> = {}): ReturnType<typeof buildDependencyGraph> {
    return buildDependencyGraph(this.input(overrides));
  }
}

/** One TCP connection between two VMs; each side's next sequence number is tracked. */
class Conn {
  readonly next: Record<string, number>;

  constructor(
    readonly lab: Lab,
    readonly client: string,
    readonly server: string,
    isn: { client?: number; server?: number } = {},
  ) {
    this.next = { [client]: isn.client ?? 1000, [server]: isn.server ?? 5000 };
  }

  peer(side: string): string {
    return side === this.client ? this.server : this.client;
  }

  /** A frame from `side`; it takes sequence space (payload, SYN) and acks `ack` (default: all). */
  frame(side: string, len: number, flags = TCP_ACK | TCP_PSH, ack?: number): Buffer {
    const peer = this.peer(side);
    const seq = this.next[side] ?? 0;
    const frame = buildTcpFrame(
      {
        srcMac: mac(side),
        dstMac: mac(peer),
        srcIp: ip(side),
        dstIp: ip(peer),
        srcPort: side === this.client ? 40000 : 80,
        dstPort: side === this.client ? 80 : 40000,
        seq,
        ack: ack ?? this.next[peer] ?? 0,
        flags,
      },
      Buffer.alloc(len, 0x61),
    );
    this.next[side] = (seq + len + (flags & TCP_SYN ? 1 : 0)) >>> 0;
    return frame;
  }

  data(side: string, len: number): void {
    this.lab.record(side, this.peer(side), this.frame(side, len));
  }

  ack(side: string, ack?: number): void {
    this.lab.record(side, this.peer(side), this.frame(side, 0, TCP_ACK, ack));
  }
}

function otherFrame(from: string, to: string, bytes: number): Buffer {
  return writeEthernet({ dst: mac(to), src: mac(from), etherType: 0x88b5 }, Buffer.alloc(bytes - 14));
}

describe("restore dependency graph: edges from data", () => {
  it("data one way and ACKs back make one edge, from the sender", () => {
    const lab = new Lab("vm1", "vm2");
    const conn = new Conn(lab, "vm1", "vm2");
    for (let i = 0; i < 5; i += 1) {
      conn.data("vm1", 1000);
      conn.ack("vm2");
    }
    const graph = lab.graph();
    assert.deepEqual(
      graph.edges.map(({ from, to, frames, reason }) => ({ from, to, frames, reason })),
      [{ from: "vm1", to: "vm2", frames: 5, reason: "data" }],
    );
    assert.equal(graph.edges[0]?.bytes, 5 * 1054);
    assert.deepEqual(graph.components, [["vm2"], ["vm1"]]);
    assert.deepEqual(graph.componentOf, { vm1: 1, vm2: 0 });
    assert.deepEqual(graph.condensation, {
      nodes: [0, 1],
      edges: [{ from: 1, to: 0, bytes: 5 * 1054, frames: 5 }],
    });
  });

  it("data both ways makes both edges and one strongly connected component", () => {
    const lab = new Lab("vm1", "vm2", "vm3");
    const conn = new Conn(lab, "vm1", "vm2");
    conn.data("vm1", 100);
    conn.data("vm2", 3000);
    conn.ack("vm1");
    const graph = lab.graph();
    assert.deepEqual(
      graph.edges.map(({ from, to }) => `${from}→${to}`),
      ["vm1→vm2", "vm2→vm1"],
    );
    assert.deepEqual(graph.components, [["vm1", "vm2"], ["vm3"]]);
    assert.deepEqual(graph.condensation.edges, []);
  });

  it("a frame in flight at the cut with payload makes an edge, a pure ACK does not", () => {
    const lab = new Lab("vm1", "vm2", "vm3");
    const conn = new Conn(lab, "vm1", "vm2");
    conn.data("vm1", 10);
    conn.ack("vm2");
    lab.inflight.push({ to: "vm3", from: "vm2", data: otherFrame("vm2", "vm3", 100) });
    lab.inflight.push({ to: "vm1", from: "vm2", data: conn.frame("vm2", 0, TCP_ACK) });
    lab.inflight.push({ to: "vm2", from: "vm1", data: conn.frame("vm1", 700) });
    const graph = lab.graph({ log: [] });
    assert.deepEqual(
      graph.edges.map(({ from, to, bytes, frames, reasons }) => ({ from, to, bytes, frames, reasons })),
      [
        { from: "vm1", to: "vm2", bytes: 754, frames: 1, reasons: ["inflight"] },
        { from: "vm2", to: "vm3", bytes: 100, frames: 1, reasons: ["inflight"] },
      ],
    );
    assert.equal(graph.unresolvedInflight, 0);
  });

  it("tells an in-flight frame's sender by MAC, by IP, or by ARP sender when none was recorded", () => {
    const lab = new Lab("vm1", "vm2", "vm3", "vm4");
    const conn = new Conn(lab, "vm1", "vm2");
    conn.data("vm1", 10);
    conn.ack("vm2");
    const arp = writeArp({
      operation: ARP_REPLY,
      senderMac: "02:00:00:00:00:09",
      senderIp: ip("vm2"),
      targetMac: mac("vm4"),
      targetIp: ip("vm4"),
    });
    lab.inflight.push(
      { to: "vm2", from: "", data: conn.frame("vm1", 20) },
      { to: "vm3", from: "", data: otherFrame("vm4", "vm3", 64) },
      {
        to: "vm4",
        from: "",
        data: writeEthernet({ dst: mac("vm4"), src: "02:00:00:00:00:09", etherType: ETHERTYPE_ARP }, arp),
      },
      { to: "vm1", from: "", data: otherFrame("vm9", "vm1", 64) },
    );
    const graph = lab.graph({ log: [], macs: [{ mac: mac("vm4"), vm: "vm4" }] });
    assert.deepEqual(
      graph.edges.map(({ from, to, reason }) => `${from}→${to} ${reason}`),
      ["vm1→vm2 inflight", "vm2→vm4 inflight", "vm4→vm3 inflight"],
    );
    assert.equal(graph.unresolvedInflight, 1);
  });
});

describe("restore dependency graph: unacknowledged data at the cut", () => {
  it("data beyond the peer's highest ACK makes an edge from its sender, even out of the log", () => {
    const lab = new Lab("vm1", "vm2");
    const conn = new Conn(lab, "vm2", "vm1");
    conn.data("vm1", 500);
    conn.ack("vm2", 5000 + 200);
    const graph = lab.graph({ log: [] });
    assert.deepEqual(graph.edges, [
      { from: "vm1", to: "vm2", bytes: 300, frames: 0, reason: "unacked", reasons: ["unacked"] },
    ]);
    assert.equal(lab.graph().edges[0]?.reason, "unacked");
    assert.deepEqual(lab.graph().edges[0]?.reasons, ["unacked", "data"]);
  });

  it("uses serial arithmetic across the 2^32 wrap, and all-acked data makes no edge", () => {
    const lab = new Lab("vm1", "vm2");
    const conn = new Conn(lab, "vm1", "vm2", { client: 0xffffff00 });
    conn.data("vm1", 0x200);
    conn.ack("vm2", 0xffffff80);
    assert.equal(lab.graph({ log: [] }).edges[0]?.bytes, 0x180);
    conn.ack("vm2");
    assert.deepEqual(lab.graph({ log: [] }).edges, []);
  });

  it("an unanswered SYN makes an edge; a reset connection makes none", () => {
    const lab = new Lab("vm1", "vm2");
    const conn = new Conn(lab, "vm1", "vm2");
    lab.record("vm1", "vm2", conn.frame("vm1", 0, TCP_SYN));
    assert.deepEqual(
      lab.graph().edges.map(({ from, to, reason }) => `${from}→${to} ${reason}`),
      ["vm1→vm2 unacked"],
    );
    lab.record("vm2", "vm1", conn.frame("vm2", 0, TCP_RST | TCP_ACK));
    assert.deepEqual(lab.graph().edges, []);
  });
});

describe("restore dependency graph: other traffic, determinism, shape", () => {
  it("non-TCP traffic makes an edge only above the threshold; flooded frames make none", () => {
    const lab = new Lab("vm1", "vm2", "vm3");
    for (let i = 0; i < 3; i += 1) lab.record("vm2", "vm1", otherFrame("vm2", "vm1", 60));
    for (let i = 0; i < 3; i += 1) lab.record("vm1", "vm3", otherFrame("vm1", "vm3", 1000));
    for (let i = 0; i < 10; i += 1) lab.record("vm3", undefined, otherFrame("vm3", "vm1", 1500));
    assert.deepEqual(lab.graph().edges, [
      { from: "vm1", to: "vm3", bytes: 3000, frames: 3, reason: "data", reasons: ["data"] },
    ]);
    assert.equal(lab.graph({ nonTcpMinBytes: 100 }).edges.length, 2);
  });

  it("a TCP segment flooded to every port still makes an edge to its flow's peer", () => {
    const lab = new Lab("vm1", "vm2", "vm3");
    const conn = new Conn(lab, "vm1", "vm2");
    conn.ack("vm2");
    conn.data("vm1", 10);
    lab.record("vm1", undefined, conn.frame("vm1", 10));
    conn.ack("vm2");
    assert.deepEqual(
      lab.graph().edges.map(({ from, to, frames }) => `${from}→${to} ${frames}`),
      ["vm1→vm2 2"],
    );
  });

  it("ignores unknown VMs and self-loops, and does not depend on input order", () => {
    const lab = new Lab("vm3", "vm1", "vm2", "vm1");
    new Conn(lab, "vm1", "vm2").data("vm1", 10);
    new Conn(lab, "vm2", "vm3").data("vm2", 10);
    new Conn(lab, "vm3", "vm2").data("vm3", 10);
    new Conn(lab, "vm1", "vm7").data("vm1", 10);
    lab.record("vm1", "vm1", otherFrame("vm1", "vm1", 5000));
    const graph = lab.graph();
    assert.deepEqual(graph.nodes, ["vm1", "vm2", "vm3"]);
    assert.deepEqual(graph.components, [["vm2", "vm3"], ["vm1"]]);
    const input = lab.input();
    const reversed = buildDependencyGraph({
      ...input,
      vms: [...input.vms].reverse(),
      flows: [...input.flows].reverse(),
      log: [...input.log].reverse(),
    });
    assert.deepEqual(reversed, graph);
  });

  it("condenses a 100,000-VM chain without running out of stack", () => {
    const names = Array.from({ length: 100_000 }, (_, i) => `v${String(i).padStart(6, "0")}`);
    const edges = names.slice(1).map((to, i) => ({ from: names[i] ?? "", to }));
    edges.push({ from: names[names.length - 1] ?? "", to: names[0] ?? "" });
    const { components, condensation } = condenseGraph(names, edges);
    assert.equal(components.length, 1);
    assert.equal(condensation.edges.length, 0);
    const chain = condenseGraph(names, edges.slice(0, -1));
    assert.equal(chain.components.length, names.length);
    assert.deepEqual(chain.components[0], [names[names.length - 1]]);
  });

  it("components are exactly the sets of mutually reachable VMs, sinks first", () => {
    const arbitrary = fc
      .integer({ min: 1, max: 9 })
      .chain((n) =>
        fc.tuple(fc.constant(n), fc.array(fc.tuple(fc.nat(n - 1), fc.nat(n - 1)), { maxLength: n * 3 })),
      );
    fc.assert(
      fc.property(arbitrary, ([n, pairs]) => {
        const names = Array.from({ length: n }, (_, i) => `vm${i}`);
        const edges = pairs.map(([from, to]) => ({ from: `vm${from}`, to: `vm${to}` }));
        const reach = names.map((_, i) => names.map((__, j) => i === j));
        for (const [from, to] of pairs) (reach[from] ?? [])[to] = true;
        for (let k = 0; k < n; k += 1)
          for (let i = 0; i < n; i += 1)
            for (let j = 0; j < n; j += 1)
              if (reach[i]?.[k] === true && reach[k]?.[j] === true) (reach[i] ?? [])[j] = true;
        const { componentOf, condensation } = condenseGraph(names, edges);
        for (let i = 0; i < n; i += 1)
          for (let j = 0; j < n; j += 1) {
            const same = componentOf[`vm${i}`] === componentOf[`vm${j}`];
            assert.equal(same, reach[i]?.[j] === true && reach[j]?.[i] === true);
          }
        for (const edge of condensation.edges) assert.ok(edge.from > edge.to);
      }),
      { numRuns: 300 },
    );
  });
});
