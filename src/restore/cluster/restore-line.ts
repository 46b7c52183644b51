import { compareText } from "./line-edges.ts";
import {
  cycleError,
  validateLineInput,
  type CondensedGraph,
  type LineVm,
  type RestoreLineErrorCode,
  type RestoreLineInput,
} from "./line-input.ts";

/**
 * The restore line (DESIGN.md §7): when each VM starts, and how much of its working set it loads
 * before (W0). Pure function, no I/O, O(V + E) plus one sort of the components for `order`.
 *
 * Constraints, for every edge A→B of the dependency graph (A sends to B):
 *   start(B) ≤ start(A)            a receiver runs no later than its senders;
 *   start(v) = start(C) for v ∈ C   a strongly connected component starts at one instant;
 *   start(v) ≥ ready(v)            nobody starts before its own restore can be ready.
 *
 * Rule: over the condensation (a DAG), receivers first (reverse topological order),
 *   start(C) = max( max over v ∈ C of ready(v),  max over edges C→D of start(D) ).
 * A sender waits for the receivers it sends to; a component waits for its slowest member.
 *
 * Why it is optimal: every feasible schedule s satisfies s(C) ≥ ready(C) and s(C) ≥ s(D) for each
 * edge C→D, so by induction in the same order s(C) ≥ start(C) for every C. And `start` itself
 * satisfies every constraint. So `start` is the pointwise-earliest feasible schedule: no feasible
 * schedule starts any VM earlier, hence none makes the cluster ready (the latest start) earlier.
 *
 * Working set size revision: a VM's slack (start − ready) is time it would spend idle; it spends
 * it prefetching: w0 = minW0 + floor(slack / pageCostMs), capped at its working set. The extra
 * pages take at most `slack` to load, so the revision never delays a start.
 */
export type { CondensedGraph, LineVm, RestoreLineErrorCode, RestoreLineInput };

export interface RestoreLine {
  /** Ms after the restore command at which each VM is started (`cont`). */
  startMs: Record<string, number>;
  /** Working-set pages each VM loads before its start. */
  w0: Record<string, number>;
  /** start − ready: the time each VM spends waiting for its receivers or its component. */
  slackMs: Record<string, number>;
  /** The latest start: the moment every VM runs. 0 for an empty cluster. */
  clusterReadyMs: number;
  /**
   * VMs grouped by start instant, earliest first. Within a group, receivers come before their
   * senders (and each component's members are together, sorted by name).
   */
  order: string[][];
}

export function planRestoreLine(input: RestoreLineInput): RestoreLine {
  const componentOfVm = validateLineInput(input);
  const { graph, vms } = input;
  const count = graph.components.length;

  const start = new Float64Array(count).fill(-Infinity);
  vms.forEach((vm, index) => {
    const component = componentOfVm[index] ?? 0;
    start[component] = Math.max(start[component] ?? 0, vm.readyEstimateMs);
  });

  const processed = scheduleComponents(graph, start);

  const startMs: [string, number][] = [];
  const w0: [string, number][] = [];
  const slackMs: [string, number][] = [];
  let clusterReadyMs = 0;
  vms.forEach((vm, index) => {
    const at = start[componentOfVm[index] ?? 0] ?? 0;
    const slack = at - vm.readyEstimateMs;
    startMs.push([vm.name, at]);
    slackMs.push([vm.name, slack]);
    w0.push([vm.name, revisedW0(vm, slack)]);
    clusterReadyMs = Math.max(clusterReadyMs, at);
  });

  return {
    startMs: Object.fromEntries(startMs),
    w0: Object.fromEntries(w0),
    slackMs: Object.fromEntries(slackMs),
    clusterReadyMs,
    order: startGroups(graph, start, processed),
  };
}

/**
 * Kahn's algorithm on the reversed condensation: a component is final once every component it
 * sends to is; then it raises each of its senders to at least its own start. `start` holds each
 * component's readiness on entry and its start time on return. Returns the processing order.
 */
function scheduleComponents(graph: CondensedGraph, start: Float64Array): Int32Array {
  const count = graph.components.length;
  const pendingReceivers = new Int32Array(count);
  const senderOffsets = new Int32Array(count + 1);
  for (const { from, to } of graph.condensation.edges) {
    if (from === to) continue; // trivially satisfied: start(C) ≤ start(C)
    pendingReceivers[from] = (pendingReceivers[from] ?? 0) + 1;
    senderOffsets[to + 1] = (senderOffsets[to + 1] ?? 0) + 1;
  }
  for (let component = 0; component < count; component += 1) {
    senderOffsets[component + 1] = (senderOffsets[component + 1] ?? 0) + (senderOffsets[component] ?? 0);
  }
  const senders = new Int32Array(senderOffsets[count] ?? 0);
  const cursor = senderOffsets.slice(0, count);
  for (const { from, to } of graph.condensation.edges) {
    if (from === to) continue;
    const slot = cursor[to] ?? 0;
    senders[slot] = from;
    cursor[to] = slot + 1;
  }

  const queue = new Int32Array(count);
  let tail = 0;
  for (let component = 0; component < count; component += 1) {
    if (pendingReceivers[component] === 0) queue[tail++] = component;
  }
  for (let head = 0; head < tail; head += 1) {
    const receiver = queue[head] ?? 0;
    const at = start[receiver] ?? 0;
    const end = senderOffsets[receiver + 1] ?? 0;
    for (let slot = senderOffsets[receiver] ?? 0; slot < end; slot += 1) {
      const sender = senders[slot] ?? 0;
      if (at > (start[sender] ?? 0)) start[sender] = at;
      const left = (pendingReceivers[sender] ?? 0) - 1;
      pendingReceivers[sender] = left;
      if (left === 0) queue[tail++] = sender;
    }
  }
  if (tail < count) {
    const stuck: number[] = [];
    pendingReceivers.forEach((left, component) => {
      if (left > 0) stuck.push(component);
    });
    throw cycleError(graph.components, stuck);
  }
  return queue;
}

/** Extra pages bought with the slack, on top of the minimum W0, capped at the working set. */
function revisedW0(vm: LineVm, slackMs: number): number {
  const minimum = Math.min(vm.w0Pages ?? 0, vm.workingSetPages);
  if (slackMs <= 0) return minimum;
  if (vm.pageCostMs <= 0) return vm.workingSetPages;
  return Math.min(vm.workingSetPages, minimum + Math.floor(slackMs / vm.pageCostMs));
}

/** Components sorted by (start, processing rank), merged into groups of equal start. */
function startGroups(graph: CondensedGraph, start: Float64Array, processed: Int32Array): string[][] {
  const sorted = Array.from(processed).sort((x, y) => (start[x] ?? 0) - (start[y] ?? 0));
  const groups: string[][] = [];
  let groupStart = Number.NaN;
  for (const component of sorted) {
    const at = start[component] ?? 0;
    const members = [...(graph.components[component] ?? [])].sort(compareText);
    const last = groups[groups.length - 1];
    if (last !== undefined && at === groupStart) {
      last.push(...members);
    } else {
      groups.push(members);
      groupStart = at;
    }
  }
  return groups;
}
