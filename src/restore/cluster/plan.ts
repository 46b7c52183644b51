import type { Flow } from "../../net/flows.ts";
import type { TrafficLogEntry } from "../../net/traffic-log.ts";
import type { SnapshotReader } from "../../snapshot/store/index.ts";
import { buildDependencyGraph, type DependencyGraph } from "./graph.ts";
import { planRestoreLine, type RestoreLine } from "./restore-line.ts";

/**
 * The restore dependency graph and restore line planned for a snapshot (`snapshot graph`).
 * Readiness estimates are a first model, to be replaced by measured figures: QEMU start and
 * device state take QEMU_START_MS, each working-set page loaded before start costs PAGE_COST_MS
 * (measured with the destination's transparent huge pages off: 8,000–9,500 working-set pages of a
 * 512 MiB VM added 400–500 ms, cold page cache; see DEFAULT_W0_PAGES), and the minimum W0 is the caller's.
 */
export const QEMU_START_MS = 300;
export const PAGE_COST_MS = 0.05;

export interface SnapshotPlan {
  graph: DependencyGraph;
  line: RestoreLine;
  estimates: { name: string; readyEstimateMs: number; workingSetPages: number }[];
}

/**
 * `minW0Pages`: the W0 every VM loads at least (capped at its working set), included in its
 * readiness estimate; the line adds slack pages on top.
 */
export async function planFromSnapshot(
  snapshot: SnapshotReader,
  options: { minW0Pages?: number } = {},
): Promise<SnapshotPlan> {
  const traffic = (await snapshot.traffic()) as { flows?: Flow[]; log?: TrafficLogEntry[] } | null;
  const inflight = await snapshot.inflight();
  const vms = snapshot.vmNames();
  const graph = buildDependencyGraph({
    vms,
    flows: traffic?.flows ?? [],
    log: traffic?.log ?? [],
    inflight,
  });
  // From the manifest: the summary would stat every file of the snapshot for nothing here.
  const estimates = snapshot.manifest.vms.map((vm) => {
    const workingSetPages = vm.workingSet.pages;
    const w0Pages = Math.min(options.minW0Pages ?? 0, workingSetPages);
    return {
      name: vm.name,
      readyEstimateMs: QEMU_START_MS + w0Pages * PAGE_COST_MS,
      workingSetPages,
      w0Pages,
    };
  });
  const line = planRestoreLine({
    graph,
    vms: estimates.map((vm) => ({ ...vm, pageCostMs: PAGE_COST_MS })),
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
