import type { RestoreOrder, SimFlow, SimOptions, SimResult, SimVm } from "./model.ts";
import { simulateRestore } from "./simulate.ts";

/**
 * The restore orders side by side on one cluster. Each order with its natural switch: restore-line
 * with hold (HotRestore), as-ready and simultaneous without (naive tooling, frames to a stopped VM
 * dropped); plus restore-line without hold and simultaneous with hold, to tell what the order
 * buys from what the hold buys.
 */
export interface ComparedConfig {
  order: RestoreOrder;
  hold: boolean;
}

export const COMPARED_CONFIGS: readonly ComparedConfig[] = [
  { order: "as-ready", hold: false },
  { order: "simultaneous", hold: false },
  { order: "restore-line", hold: true },
  { order: "restore-line", hold: false },
  { order: "simultaneous", hold: true },
];

export interface CompareRow {
  order: RestoreOrder;
  hold: boolean;
  clusterLatencyMs: number;
  medianStartMs: number;
  lastProgressMs: number;
  maxBackoffMs: number;
  medianBackoffMs: number;
  retransmissions: number;
  flowsWithDrop: number;
  heldFrames: number;
}

export interface ClusterToCompare {
  vms: readonly SimVm[];
  flows: readonly SimFlow[];
}

export function compareRow(result: SimResult): CompareRow {
  return {
    order: result.order,
    hold: result.hold,
    clusterLatencyMs: result.clusterLatencyMs,
    medianStartMs: result.medianStartMs,
    lastProgressMs: result.lastProgressMs,
    maxBackoffMs: result.maxBackoffMs,
    medianBackoffMs: result.medianBackoffMs,
    retransmissions: result.retransmissions,
    flowsWithDrop: result.flowsWithDrop,
    heldFrames: result.heldFrames,
  };
}

/** One row per COMPARED_CONFIGS entry, in that order. */
export function compareOrders(cluster: ClusterToCompare, options: SimOptions = {}): CompareRow[] {
  return COMPARED_CONFIGS.map(({ order, hold }) =>
    compareRow(simulateRestore({ vms: cluster.vms, flows: cluster.flows, order, hold, options })),
  );
}
