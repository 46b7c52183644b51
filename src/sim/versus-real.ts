/**
 * The simulator's prediction for a real restore: the same VMs with their measured readiness, the
 * same flows (those active at the cut), the same order and hold; then, per flow, the predicted
 * backoff beside the one measured at the switch. The simulator models the protocol and Linux's
 * retransmission timer, not the guests' speed after start: the difference is what a slow guest
 * adds (TCG, a guest faulting its memory in).
 */
import type { RestoreOrder } from "./model.ts";
import { simulateRestore } from "./simulate.ts";

/** What the comparison needs of a RestoreReport (structurally). */
export interface RealRestore {
  order: RestoreOrder;
  hold: boolean;
  backoff: { maxMs: number | null; flows: { from: string; to: string; ms: number | null }[] };
  vms: { name: string; readyMs: number; startedMs: number }[];
}

export interface FlowVersus {
  from: string;
  to: string;
  predictedMs: number;
  measuredMs: number | null;
}

export interface SimVersusReal {
  flows: FlowVersus[];
  predictedMaxMs: number | null;
  measuredMaxMs: number | null;
  /** Per VM: predicted start − measured start (the order logic itself, same inputs). */
  startErrorMs: Record<string, number>;
}

export function simulateReal(real: RealRestore): SimVersusReal {
  const result = simulateRestore({
    vms: real.vms.map((vm) => ({ name: vm.name, readyMs: vm.readyMs })),
    flows: real.backoff.flows.map((flow) => ({ from: flow.from, to: flow.to })),
    order: real.order,
    hold: real.hold,
  });
  const flows = result.flows.map((flow, index) => ({
    from: flow.from,
    to: flow.to,
    predictedMs: Math.round(flow.backoffMs),
    measuredMs: real.backoff.flows[index]?.ms ?? null,
  }));
  const startErrorMs: Record<string, number> = {};
  for (const vm of real.vms)
    startErrorMs[vm.name] = Math.round((result.startMs[vm.name] ?? 0) - vm.startedMs);
  return {
    flows,
    predictedMaxMs: flows.length > 0 ? Math.max(...flows.map((flow) => flow.predictedMs)) : null,
    measuredMaxMs: real.backoff.maxMs,
    startErrorMs,
  };
}
