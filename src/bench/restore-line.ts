import { median } from "../metrics/stats.ts";
import { buildTcpFrame } from "../net/packet.ts";
import { TCP_ACK, TCP_PSH } from "../net/tcp.ts";
import { TrafficMonitor } from "../net/traffic-monitor.ts";
import { buildDependencyGraph, type DependencyGraphInput } from "../restore/cluster/graph.ts";
import { planRestoreLine, type LineVm } from "../restore/cluster/restore-line.ts";
import { createRandom } from "../sim/random.ts";

/**
 * Restore-line suite (no VMs): random traffic on clusters of 10 to 10,000 VMs with three TCP
 * connections per VM. VMs form services of up to four (consecutive in a hidden random order).
 * Four in five connections go to any VM, one way (data one way, ACKs back, down the hidden order,
 * so they form a DAG); one in five stays inside the service and carries data both ways (cycles:
 * strongly connected components of up to four VMs, like replicas of one database). The
 * traffic goes through the switch's real sensor (TrafficMonitor, real frames), so the graph is
 * built from the same flows and log a snapshot stores. Timed per rep: the dependency graph
 * (edges, SCCs, condensation) and the restore line; one untimed warm-up run first (JIT).
 * Results: medians over `reps`, one row per cluster size.
 */
export interface RestoreLineResult {
  vms: number;
  edges: number;
  components: number;
  largestComponent: number;
  clusterReadyMs: number;
  graphMs: number;
  planMs: number;
  totalMs: number;
  reps: number;
}

const SIZES = [10, 100, 1_000, 10_000];
const CONNECTIONS_PER_VM = 3;
const SERVICE_SIZE = 4;
const INSIDE_SERVICE = 0.2;

/** Seeded, so every run plans the same graphs. */
const random = createRandom;

const vmName = (index: number): string => `vm${index}`;
const macOf = (index: number): string =>
  `52:54:00:${[index >> 16, (index >> 8) & 0xff, index & 0xff].map((b) => b.toString(16).padStart(2, "0")).join(":")}`;
const ipOf = (index: number): string =>
  `10.${(index + 1) >> 16}.${((index + 1) >> 8) & 0xff}.${(index + 1) & 0xff}`;

function segment(from: number, to: number, port: number, seq: number, ack: number, len: number): Buffer {
  return buildTcpFrame(
    {
      srcMac: macOf(from),
      dstMac: macOf(to),
      srcIp: ipOf(from),
      dstIp: ipOf(to),
      srcPort: from < to ? port : 80,
      dstPort: from < to ? 80 : port,
      seq,
      ack,
      flags: len > 0 ? TCP_ACK | TCP_PSH : TCP_ACK,
    },
    Buffer.alloc(len),
  );
}

/** The traffic a snapshot of a random cluster would store, and each VM's restore figures. */
export function randomCluster(count: number, seed: number): { input: DependencyGraphInput; vms: LineVm[] } {
  const next = random(seed);
  const byRank = Array.from({ length: count }, (_, index) => index);
  for (let index = count - 1; index > 0; index -= 1) {
    const other = Math.floor(next() * (index + 1));
    [byRank[index], byRank[other]] = [byRank[other] ?? 0, byRank[index] ?? 0];
  }
  const rank = new Int32Array(count);
  byRank.forEach((vm, position) => (rank[vm] = position));
  const monitor = new TrafficMonitor({
    trafficLog: { maxEntries: count * CONNECTIONS_PER_VM * 4, maxAgeMs: Number.POSITIVE_INFINITY },
  });
  let t = 0;
  const send = (from: number, to: number, port: number, seq: number, ack: number, len: number): void => {
    t += 1;
    monitor.record(segment(from, to, port, seq, ack, len), vmName(from), vmName(to), t);
  };
  for (let from = 0; from < count && count > 1; from += 1) {
    const serviceStart = Math.floor((rank[from] ?? 0) / SERVICE_SIZE) * SERVICE_SIZE;
    const serviceSize = Math.min(SERVICE_SIZE, count - serviceStart);
    for (let connection = 0; connection < CONNECTIONS_PER_VM; connection += 1) {
      const port = 40_000 + connection;
      const inside = serviceSize > 1 && next() < INSIDE_SERVICE;
      let to: number;
      if (inside) {
        const offset = 1 + Math.floor(next() * (serviceSize - 1));
        to = byRank[serviceStart + (((rank[from] ?? 0) - serviceStart + offset) % serviceSize)] ?? from;
      } else {
        to = Math.floor(next() * (count - 1));
        if (to >= from) to += 1;
      }
      const [sender, receiver] = (rank[from] ?? 0) < (rank[to] ?? 0) ? [from, to] : [to, from];
      send(sender, receiver, port, 1000, 5000, 1400);
      send(receiver, sender, port, 5000, 2400, inside ? 200 : 0);
      if (inside) send(sender, receiver, port, 2400, 5200, 0);
    }
  }
  const names = Array.from({ length: count }, (_, index) => vmName(index));
  const vms = names.map((name) => ({
    name,
    readyEstimateMs: 500 + Math.round(next() * 4_500),
    w0Pages: 256,
    workingSetPages: 1_000 + Math.floor(next() * 99_000),
    pageCostMs: 0.01,
  }));
  const input = { vms: names, flows: monitor.flows(t), log: monitor.trafficLog(t), inflight: [] };
  return { input, vms };
}

function runOnce(cluster: ReturnType<typeof randomCluster>): {
  graphMs: number;
  planMs: number;
  row: RestoreLineResult;
} {
  const started = performance.now();
  const graph = buildDependencyGraph(cluster.input);
  const built = performance.now();
  const line = planRestoreLine({ graph, vms: cluster.vms });
  const planned = performance.now();
  const row: RestoreLineResult = {
    vms: graph.nodes.length,
    edges: graph.edges.length,
    components: graph.components.length,
    largestComponent: Math.max(0, ...graph.components.map((members) => members.length)),
    clusterReadyMs: line.clusterReadyMs,
    graphMs: 0,
    planMs: 0,
    totalMs: 0,
    reps: 0,
  };
  return { graphMs: built - started, planMs: planned - built, row };
}

const round = (ms: number): number => Math.round(ms * 100) / 100;

export function restoreLineSuite(reps: number): Promise<RestoreLineResult[]> {
  const results: RestoreLineResult[] = [];
  for (const count of SIZES) {
    const cluster = randomCluster(count, count);
    let { row } = runOnce(cluster);
    const graphTimes: number[] = [];
    const planTimes: number[] = [];
    const totals: number[] = [];
    for (let rep = 0; rep < Math.max(1, reps); rep += 1) {
      const run = runOnce(cluster);
      row = run.row;
      graphTimes.push(run.graphMs);
      planTimes.push(run.planMs);
      totals.push(run.graphMs + run.planMs);
    }
    results.push({
      ...row,
      graphMs: round(median(graphTimes)),
      planMs: round(median(planTimes)),
      totalMs: round(median(totals)),
      reps: totals.length,
    });
    process.stderr.write(`  restore line ${count} VMs: ${round(median(totals))} ms (graph + plan)\n`);
  }
  return Promise.resolve(results);
}
