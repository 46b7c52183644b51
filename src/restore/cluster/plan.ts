import type { Flow } from "../../net/flows.ts";
import type { TrafficLogEntry } from "../../net/traffic-log.ts";
import type { SnapshotReader } from "../../snapshot/store/index.ts";
import { buildDependencyGraph, type DependencyGraph } from "./graph.ts";
import { planRestoreLine, type RestoreLine } from "./restore-line.ts";

/**
 * The restore dependency graph and restore line planned for a snapshot (`snapshot graph`).
 * Readiness estimates are a first model, to be replaced by measured figures: QEMU start and
 * device state take QEMU_START_MS, each working-set page loaded before start costs PAGE_COST_MS
 * (4 KiB at ~150 MB/s from a cold local store), and the minimum W0 is empty.
 */
export const QEMU_START_MS = 300;
export const PAGE_COST_MS = 4096 / 150_000;

export interface SnapshotPlan {
  graph: DependencyGraph;
  line: RestoreLine;
  estimates: { name: string; readyEstimateMs: number; workingSetPages: number }[];
}

export async function planFromSnapshot(snapshot: SnapshotReader): Promise<SnapshotPlan> {
  const traffic = (await snapshot.traffic()) as { flows?: Flow[]; log?: TrafficLogEntry[] } | null;
  const inflight = await snapshot.inflight();
  const vms = snapshot.vmNames();
  const graph = buildDependencyGraph({
    vms,
    flows: traffic?.flows ?? [],
    log: traffic?.log ?? [],
    inflight,
  });
  const summary = await snapshot.summary();
  const estimates = summary.vms.map((vm) => ({
    name: vm.name,
    readyEstimateMs: QEMU_START_MS,
    workingSetPages: vm.workingSetPages,
  }));
  const line = planRestoreLine({
    graph,
    vms: estimates.map((vm) => ({ ...vm, w0Pages: 0, pageCostMs: PAGE_COST_MS })),
  });
  return { graph, line, estimates };
}

/** Graphviz DOT of the graph, with each VM's planned start and W0. */
export function planToDot(plan: SnapshotPlan): string {
  const lines = ["digraph restore {", "  rankdir=LR;"];
  for (const node of plan.graph.nodes) {
    const start = Math.round(plan.line.startMs[node] ?? 0);
    lines.push(`  "${node}" [label="${node}\\nstart ${start} ms\\nW0 ${plan.line.w0[node] ?? 0} pages"];`);
  }
  for (const edge of plan.graph.edges) {
    lines.push(`  "${edge.from}" -> "${edge.to}" [label="${edge.reason} ${edge.bytes} B"];`);
  }
  lines.push("}");
  return lines.join("\n");
}
