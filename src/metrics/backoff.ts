/**
 * TCP backoff during a restore (DESIGN.md §9). Pure: times come in with the calls.
 *
 * For each TCP flow active at the cut: the time from the moment both of its VMs run to the flow's
 * first progress (new sequence space or an advancing ACK) seen at the switch. The switch's flow
 * table is loaded with the flows saved at the cut, so data a guest sends again counts as a
 * retransmission, not as progress. Retransmitted segments seen during the restore are counted
 * over all flows.
 */
import type { Flow } from "../net/flows.ts";
import { median } from "./stats.ts";

/** A flow counts as active at the cut when it carried a segment this recently and was not closed. */
export const ACTIVE_AT_CUT_MS = 3000;

export interface TrackedFlow {
  key: string;
  /** The data sender's VM and the receiver's (by payload bytes). */
  from: string;
  to: string;
}

export interface FlowBackoff extends TrackedFlow {
  /** Both VMs running → first progress, ms; null when no progress was seen. */
  ms: number | null;
  /** Retransmitted segments of this flow seen during the restore. */
  retransmits: number;
  /** The flow's first segments during the restore (ms after the command), for timelines. */
  segments: { atMs: number; kind: SegmentKind }[];
}

export type SegmentKind = "progress" | "retransmit" | "other";
export const TIMELINE_SEGMENTS = 40;

export interface BackoffReport {
  maxMs: number | null;
  medianMs: number | null;
  /** Flows that made no progress within the measurement. */
  stalledFlows: number;
  flows: FlowBackoff[];
}

type FlowAtCut = Pick<Flow, "key" | "a" | "b" | "ab" | "ba"> & { lastSeenAgoMs?: number };

/** The flows of a snapshot's traffic record that were active at the cut, with their VMs. */
export function flowsActiveAtCut(flows: readonly FlowAtCut[]): TrackedFlow[] {
  const out: TrackedFlow[] = [];
  for (const flow of flows) {
    const closed = flow.ab.finSeen || flow.ba.finSeen || flow.ab.rstSeen || flow.ba.rstSeen;
    const recent = flow.lastSeenAgoMs === undefined || flow.lastSeenAgoMs <= ACTIVE_AT_CUT_MS;
    if (closed || !recent || flow.a.vm === undefined || flow.b.vm === undefined) continue;
    const aSends = flow.ab.payloadBytes >= flow.ba.payloadBytes;
    out.push({
      key: flow.key,
      from: aSends ? flow.a.vm : flow.b.vm,
      to: aSends ? flow.b.vm : flow.a.vm,
    });
  }
  return out.sort((x, y) => (x.key < y.key ? -1 : x.key > y.key ? 1 : 0));
}

export class BackoffTracker {
  readonly #flows: Map<string, TrackedFlow>;
  readonly #started = new Map<string, number>();
  readonly #progress = new Map<string, number>();
  readonly #retransmits = new Map<string, number>();
  readonly #timeline = new Map<string, { atMs: number; kind: SegmentKind }[]>();
  #totalRetransmits = 0;

  constructor(flows: readonly TrackedFlow[]) {
    this.#flows = new Map(flows.map((flow) => [flow.key, flow]));
  }

  /** The VM runs from `atMs` on. */
  started(vm: string, atMs: number): void {
    if (!this.#started.has(vm)) this.#started.set(vm, atMs);
  }

  /** A TCP segment seen at the switch at `atMs`. */
  observe(key: string, atMs: number, progress: boolean, retransmission: boolean): void {
    if (retransmission) {
      this.#totalRetransmits += 1;
      this.#retransmits.set(key, (this.#retransmits.get(key) ?? 0) + 1);
    }
    const flow = this.#flows.get(key);
    if (flow === undefined) return;
    const timeline = this.#timeline.get(key) ?? [];
    if (timeline.length < TIMELINE_SEGMENTS) {
      timeline.push({ atMs, kind: retransmission ? "retransmit" : progress ? "progress" : "other" });
      this.#timeline.set(key, timeline);
    }
    if (!progress || this.#progress.has(key)) return;
    const both = this.#bothRunning(flow);
    if (both !== undefined && atMs >= both) this.#progress.set(key, atMs);
  }

  /** Every tracked flow has made progress since both its VMs run. */
  get complete(): boolean {
    return this.#progress.size === this.#flows.size;
  }

  /** Retransmitted segments of any flow, tracked or not. */
  get retransmits(): number {
    return this.#totalRetransmits;
  }

  report(): BackoffReport {
    const flows: FlowBackoff[] = [...this.#flows.values()].map((flow) => {
      const both = this.#bothRunning(flow);
      const at = this.#progress.get(flow.key);
      const ms = both === undefined || at === undefined ? null : Math.round(at - both);
      const segments = this.#timeline.get(flow.key) ?? [];
      return { ...flow, ms, retransmits: this.#retransmits.get(flow.key) ?? 0, segments };
    });
    const measured = flows.flatMap((flow) => (flow.ms === null ? [] : [flow.ms]));
    return {
      maxMs: measured.length > 0 ? Math.max(...measured) : null,
      medianMs: measured.length > 0 ? Math.round(median(measured)) : null,
      stalledFlows: flows.length - measured.length,
      flows,
    };
  }

  #bothRunning(flow: TrackedFlow): number | undefined {
    const from = this.#started.get(flow.from);
    const to = this.#started.get(flow.to);
    return from === undefined || to === undefined ? undefined : Math.max(from, to);
  }
}
