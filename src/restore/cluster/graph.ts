import type { Flow } from "../../net/flows.ts";
import type { TrafficLogEntry } from "../../net/traffic-log.ts";
import {
  addInflightEdges,
  addLogEdges,
  addUnackedEdges,
  compareText,
  EdgeAccumulator,
  NON_TCP_MIN_BYTES,
  type EdgeReason,
  type GraphEdge,
  type InflightFrameInput,
} from "./line-edges.ts";
import { stronglyConnectedComponents } from "./line-scc.ts";
import { senderResolver } from "./line-sender.ts";

/**
 * The restore dependency graph (DESIGN.md §6). Pure logic: it reads what a snapshot's
 * `traffic.json` and `inflight.bin` hold, and does no I/O.
 *
 * Nodes are VMs. Edge A→B means "A will talk to B right after the restore": B must run no later
 * than A. The evidence and its direction rules are in line-edges.ts (data, unacked, inflight; the
 * direction always from sequence space, never from ACKs). Two VMs that both send to each other
 * form a cycle, and every strongly connected component (SCC) must start at one instant; the
 * condensation (one node per SCC) is a DAG, which is what the restore line schedules.
 *
 * Deterministic: nodes sorted, edges sorted by (from, to), component members sorted, components in
 * reverse topological order (sinks first: every condensation edge goes from a higher component
 * index to a lower one), condensation edges sorted. O(V + E + log + inflight), plus the sorts.
 */
export type { EdgeReason, GraphEdge, InflightFrameInput };
export { NON_TCP_MIN_BYTES };

export interface CondensedEdge {
  /** Component indices. */
  from: number;
  to: number;
  bytes: number;
  frames: number;
}

export interface Condensation {
  /** Component indices, 0..components.length-1. */
  nodes: number[];
  edges: CondensedEdge[];
}

export interface DependencyGraph {
  nodes: string[];
  edges: GraphEdge[];
  /** Strongly connected components, members sorted, sinks first (reverse topological order). */
  components: string[][];
  /** Each VM's index in `components`. */
  componentOf: Record<string, number>;
  condensation: Condensation;
  /** In-flight frames that made no edge because their sender or receiver is not a known VM. */
  unresolvedInflight: number;
}

export interface DependencyGraphInput {
  vms: readonly string[];
  /** The switch's TCP flow table at the cut (`traffic.json` flows). */
  flows: readonly Flow[];
  /** The traffic log before the cut (`traffic.json` log). */
  log: readonly TrafficLogEntry[];
  /** The frames held in the switch at the cut (`inflight.bin`). */
  inflight: readonly InflightFrameInput[];
  /** MAC → VM, to tell the sender of an in-flight frame recorded without one. */
  macs?: readonly { mac: string; vm: string }[];
  /** See NON_TCP_MIN_BYTES. */
  nonTcpMinBytes?: number;
}

export function buildDependencyGraph(input: DependencyGraphInput): DependencyGraph {
  const nodes = [...new Set(input.vms)].sort(compareText);
  const edges = new EdgeAccumulator(nodes);
  const flowsByKey = new Map(input.flows.map((flow) => [flow.key, flow]));
  addLogEdges(edges, input.log, flowsByKey, input.nonTcpMinBytes ?? NON_TCP_MIN_BYTES);
  addUnackedEdges(edges, input.flows);
  const unresolvedInflight = addInflightEdges(
    edges,
    input.inflight,
    senderResolver(input.flows, input.macs ?? []),
  );
  const graphEdges = edges.edges();
  return { nodes, edges: graphEdges, ...condenseGraph(nodes, graphEdges), unresolvedInflight };
}

/**
 * The SCCs and the condensation of any graph over `nodes` (edges naming other nodes are
 * ignored; self-loops make no condensation edge). Sorts its own input, so the result does not
 * depend on the order of `nodes` or `edges`.
 */
export function condenseGraph(
  nodes: readonly string[],
  edges: readonly { from: string; to: string; bytes?: number; frames?: number }[],
): { components: string[][]; componentOf: Record<string, number>; condensation: Condensation } {
  const names = [...new Set(nodes)].sort(compareText);
  const indexOf = new Map(names.map((name, index) => [name, index]));
  const successors: number[][] = names.map(() => []);
  const known: { from: number; to: number; bytes: number; frames: number }[] = [];
  for (const edge of edges) {
    const from = indexOf.get(edge.from);
    const to = indexOf.get(edge.to);
    if (from === undefined || to === undefined) continue;
    known.push({ from, to, bytes: edge.bytes ?? 0, frames: edge.frames ?? 0 });
  }
  known.sort((x, y) => x.from - y.from || x.to - y.to);
  for (const edge of known) successors[edge.from]?.push(edge.to);

  const found = stronglyConnectedComponents(names.length, successors);
  const componentIndex = new Int32Array(names.length);
  const components = found.map((members, index) => {
    for (const member of members) componentIndex[member] = index;
    return members.map((member) => names[member] ?? "").sort(compareText);
  });
  const componentOf = Object.fromEntries(names.map((name, index) => [name, componentIndex[index] ?? 0]));

  // Known edges are sorted by source node: offsets[v]..offsets[v+1] are v's. For each component,
  // `lastSource[d] === c` says the edge c→d exists already, at `slot[d]`.
  const offsets = new Int32Array(names.length + 1);
  for (const edge of known) offsets[edge.from + 1] = (offsets[edge.from + 1] ?? 0) + 1;
  for (let node = 0; node < names.length; node += 1) {
    offsets[node + 1] = (offsets[node + 1] ?? 0) + (offsets[node] ?? 0);
  }
  const lastSource = new Int32Array(found.length).fill(-1);
  const slot = new Int32Array(found.length);
  const condensationEdges: CondensedEdge[] = [];
  found.forEach((members, from) => {
    for (const member of members) {
      const end = offsets[member + 1] ?? 0;
      for (let index = offsets[member] ?? 0; index < end; index += 1) {
        const edge = known[index];
        if (edge === undefined) continue;
        const to = componentIndex[edge.to] ?? from;
        if (to === from) continue;
        const existing = lastSource[to] === from ? condensationEdges[slot[to] ?? 0] : undefined;
        if (existing === undefined) {
          lastSource[to] = from;
          slot[to] = condensationEdges.length;
          condensationEdges.push({ from, to, bytes: edge.bytes, frames: edge.frames });
        } else {
          existing.bytes += edge.bytes;
          existing.frames += edge.frames;
        }
      }
    }
  });
  condensationEdges.sort((x, y) => x.from - y.from || x.to - y.to);
  return {
    components,
    componentOf,
    condensation: { nodes: components.map((_, index) => index), edges: condensationEdges },
  };
}
