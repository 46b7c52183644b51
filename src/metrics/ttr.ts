/**
 * Time to responsiveness (DESIGN.md §9), two forms. Pure.
 *
 * Workload form (VEE'11): restore command → the first 100 ms in which the guest's workload is back
 * to at least 90% of its pre-snapshot rate. The `mem` workload keeps a history of
 * (guest CLOCK_MONOTONIC ms, touches) ticks every 50 ms (guest/src/hr-mem.c). A restored guest's
 * clock continues from the cut (QEMU saves and restores its virtual clock), so in guest time the
 * history reads: ticks before the cut at the normal rate, then the restored run. `cutGuestMs`, the
 * guest time at which the restored VM started, is estimated by the caller from a guest clock
 * reading and the host time since `cont`.
 *
 * Generic form: restore command → the first 100 ms window after start in which on-demand page
 * faults stall the guest for less than 10% of it (stall = request received → page sent, from the
 * page server's fault log; overlapping stalls count once). A restore without post-start faults is
 * responsive at its start.
 */
import { median } from "./stats.ts";

export interface HistoryTick {
  atMs: number;
  touches: number;
}

/** Parses `ms touches` lines; malformed lines are skipped, the result sorted by time. */
export function parseHistory(text: string): HistoryTick[] {
  const out: HistoryTick[] = [];
  for (const line of text.split("\n")) {
    const match = /^\s*(\d+)\s+(\d+)\s*$/.exec(line);
    if (match === null) continue;
    out.push({ atMs: Number(match[1]), touches: Number(match[2]) });
  }
  return out.sort((a, b) => a.atMs - b.atMs);
}

export interface WorkloadTtrInput {
  history: readonly HistoryTick[];
  /** Guest clock (ms) at the restored VM's start (= at the cut). */
  cutGuestMs: number;
  /** The VM's start, ms after the restore command. */
  startedMs: number;
  /** Rate window (default 100 ms) and share of the pre-snapshot rate to reach (default 0.9). */
  windowMs?: number;
  share?: number;
  /** Pre-snapshot rate: median over windows in this span before the cut (default 2000 ms). */
  baselineMs?: number;
}

export interface WorkloadTtr {
  /** Restore command → start of the first window at ≥ share × the pre-snapshot rate; null: not yet. */
  ttrMs: number | null;
  /** Touches per second before the cut. */
  baselineRate: number;
  /** Touches per second in the first window after the start. */
  firstRate: number | null;
}

/** Rate (per second) of the window starting at tick `i` and spanning at least `windowMs`. */
function windowRate(history: readonly HistoryTick[], i: number, windowMs: number): number | undefined {
  const from = history[i];
  if (from === undefined) return undefined;
  for (let j = i + 1; j < history.length; j += 1) {
    const to = history[j]!;
    const span = to.atMs - from.atMs;
    if (span >= windowMs) return ((to.touches - from.touches) * 1000) / span;
  }
  return undefined;
}

export function workloadTtr(input: WorkloadTtrInput): WorkloadTtr {
  const windowMs = input.windowMs ?? 100;
  const share = input.share ?? 0.9;
  const baselineMs = input.baselineMs ?? 2000;
  const { history, cutGuestMs } = input;
  const before: number[] = [];
  let first = -1;
  for (let i = 0; i < history.length; i += 1) {
    const tick = history[i]!;
    if (tick.atMs >= cutGuestMs) {
      first = i;
      break;
    }
    if (tick.atMs < cutGuestMs - baselineMs) continue;
    const rate = windowRate(history, i, windowMs);
    const end = history.find((t) => t.atMs >= tick.atMs + windowMs);
    if (rate !== undefined && end !== undefined && end.atMs <= cutGuestMs) before.push(rate);
  }
  const baselineRate = before.length > 0 ? median(before) : 0;
  if (first < 0 || baselineRate <= 0) return { ttrMs: null, baselineRate, firstRate: null };
  const firstRate = windowRate(history, first, windowMs) ?? null;
  for (let i = first; i < history.length; i += 1) {
    const rate = windowRate(history, i, windowMs);
    if (rate === undefined) break;
    if (rate >= share * baselineRate) {
      const after = Math.max(0, history[i]!.atMs - cutGuestMs);
      return { ttrMs: Math.round(input.startedMs + after), baselineRate, firstRate };
    }
  }
  return { ttrMs: null, baselineRate, firstRate };
}

export interface StallInterval {
  /** µs since the restore command. */
  fromUs: number;
  toUs: number;
}

export interface FaultTtrInput {
  stalls: readonly StallInterval[];
  startedUs: number;
  windowMs?: number;
  /** Stalled share below which a window counts as responsive (default 0.1). */
  share?: number;
  /** Windows slide by this much (default 10 ms). */
  stepMs?: number;
}

/** Restore command → start of the first responsive window after start, ms. */
export function faultStallTtr(input: FaultTtrInput): number {
  const windowUs = (input.windowMs ?? 100) * 1000;
  const limitUs = windowUs * (input.share ?? 0.1);
  const stepUs = (input.stepMs ?? 10) * 1000;
  const stalls = mergeStalls(input.stalls.filter((s) => s.toUs > input.startedUs));
  const lastUs = stalls.length > 0 ? stalls[stalls.length - 1]!.toUs : input.startedUs;
  for (let at = input.startedUs; at <= lastUs; at += stepUs) {
    if (stalledWithin(stalls, at, at + windowUs) < limitUs) return Math.round(at / 1000);
  }
  return Math.round(Math.max(input.startedUs, lastUs) / 1000);
}

function mergeStalls(stalls: readonly StallInterval[]): StallInterval[] {
  const sorted = [...stalls].sort((a, b) => a.fromUs - b.fromUs);
  const out: StallInterval[] = [];
  for (const stall of sorted) {
    const last = out[out.length - 1];
    if (last !== undefined && stall.fromUs <= last.toUs) last.toUs = Math.max(last.toUs, stall.toUs);
    else out.push({ ...stall });
  }
  return out;
}

function stalledWithin(stalls: readonly StallInterval[], from: number, to: number): number {
  let total = 0;
  for (const stall of stalls) {
    if (stall.fromUs >= to) break;
    total += Math.max(0, Math.min(to, stall.toUs) - Math.max(from, stall.fromUs));
  }
  return total;
}
