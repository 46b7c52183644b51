/**
 * Input and output of the cluster restore simulator (simulate.ts, which describes the model).
 * All times are milliseconds after the restore command.
 */
export type SimErrorCode = "SIM_INVALID_INPUT" | "SIM_INTERNAL";

/**
 * When each VM is started (`cont`) once it is ready:
 *   as-ready      each VM the instant it is ready (naive tooling);
 *   simultaneous  every VM at the latest ready time;
 *   restore-line  `planRestoreLine`: receivers no later than senders, a strongly connected
 *                 component at one instant, nobody before it is ready.
 */
export type RestoreOrder = "as-ready" | "simultaneous" | "restore-line";

export const RESTORE_ORDERS: readonly RestoreOrder[] = ["as-ready", "simultaneous", "restore-line"];

export interface SimVm {
  name: string;
  /** When its restorable state is loaded and it could be started. */
  readyMs: number;
}

/** One active TCP connection's data direction: `from` has unacknowledged data for `to`. */
export interface SimFlow {
  from: string;
  to: string;
  /**
   * How long the sender's retransmission timer had been running at the cut, in [0, initial RTO).
   * Default 0: the timer restarts in full when the sender runs.
   */
  rtoElapsedMs?: number;
}

export interface SimOptions {
  /** One-way latency VM → switch → VM. Default 0.1 ms. */
  linkLatencyMs?: number;
  /** The RTO the sender's srtt/rttvar give (Linux: srtt + 4·rttvar); floored at 200 ms. Default 200. */
  srttRtoMs?: number;
}

export interface SimInput {
  vms: readonly SimVm[];
  flows: readonly SimFlow[];
  order: RestoreOrder;
  /** The switch holds frames to a VM that is not running and delivers them, in order, at its start. */
  hold: boolean;
  options?: SimOptions;
}

export interface SimFlowResult {
  from: string;
  to: string;
  /** The later of the two VMs' starts. */
  bothRunningMs: number;
  /** First progress seen at the switch at or after `bothRunningMs`. */
  progressMs: number;
  /** progressMs − bothRunningMs. */
  backoffMs: number;
  /** Segments the sender's RTO sent again. */
  retransmissions: number;
  /** Whether the switch dropped any of this flow's frames (the in-flight segment included). */
  sawDrop: boolean;
  /** Frames of this flow the switch held for a receiver that was not running. */
  heldFrames: number;
}

export interface SimResult {
  order: RestoreOrder;
  hold: boolean;
  /** Each VM's start, by name. */
  startMs: Record<string, number>;
  /** The latest start: the moment the whole cluster runs. 0 for an empty cluster. */
  clusterLatencyMs: number;
  /** Median of the VMs' starts: how soon a typical VM runs. 0 for an empty cluster. */
  medianStartMs: number;
  /** The latest flow progress (or clusterLatencyMs if later): the moment every flow moves again. */
  lastProgressMs: number;
  /** In input order. */
  flows: SimFlowResult[];
  /** 0 when there are no flows. */
  maxBackoffMs: number;
  medianBackoffMs: number;
  retransmissions: number;
  flowsWithDrop: number;
  heldFrames: number;
}

export const DEFAULT_LINK_LATENCY_MS = 0.1;
export const MIN_RTO_MS = 200;
export const MAX_RTO_MS = 120_000;
