import { median } from "../metrics/stats.ts";
import { condenseGraph } from "../restore/cluster/graph.ts";
import { planRestoreLine } from "../restore/cluster/restore-line.ts";
import { HrError } from "../util/errors.ts";
import { EventQueue } from "./event-queue.ts";
import {
  DEFAULT_LINK_LATENCY_MS,
  MAX_RTO_MS,
  MIN_RTO_MS,
  RESTORE_ORDERS,
  type SimFlowResult,
  type SimInput,
  type SimResult,
} from "./model.ts";

/**
 * Discrete-event simulation of a cluster restore: VM starts, the switch, and each TCP flow's
 * retransmission timer. Pure and deterministic (no I/O, no clock); O((V + E + events) log events).
 *
 * Model (times in ms after the restore command):
 *   - VM i starts at start_i, chosen by the order from ready_i (model.ts, RestoreOrder), and runs
 *     from then on. Guest clocks are frozen until a VM starts and resume from the cut.
 *   - A flow A→B is one TCP connection's data direction. At the cut A has one unacknowledged
 *     segment, in flight in the switch. With hold the switch re-injects it at time 0; without hold
 *     it is lost (a drop). A's RTO timer had been running rtoElapsed (default 0) at the cut.
 *   - RTO: max(200, srttRtoMs) initially, doubled on each expiry, capped at 120 s. It runs only
 *     while A runs, so it first expires at start_A + RTO − rtoElapsed. Each expiry sends the
 *     segment again (a retransmission) until A receives B's ACK, which cancels the timer.
 *   - A frame sent at t reaches the switch and its receiver at t + linkLatency. If the receiver
 *     is not running the switch holds it (hold on; delivered in order at the receiver's start) or
 *     drops it (hold off). B acks every data segment it receives, at once (no delayed ACK).
 *   - Progress, seen at the switch: the frame delivered is new to its running receiver, the data
 *     to B the first time, the ACK to A the first time. Backoff = the first progress at or after
 *     both VMs run, minus that instant. Progress before that does not count: the flow is not
 *     restored until both ends run; the ACK for data delivered earlier is the progress then.
 * Simplifications: one segment per flow (no window, no congestion control, no fast retransmit,
 * no SYN or FIN), no loss but the switch's drops, no limit on held frames, tcp_retries2 ignored.
 * Ties at one instant run in the order the events were queued; VM starts are queued first.
 */
type Frame = "data" | "ack";
type SimEvent =
  | { kind: "start"; vm: number }
  | { kind: "arrive"; flow: number; frame: Frame }
  | { kind: "rto"; flow: number; generation: number };

interface FlowState {
  sender: number;
  receiver: number;
  bothRunningMs: number;
  /** Left of the first RTO when the sender starts. */
  firstTimeoutMs: number;
  rtoMs: number;
  /** Bumped to cancel the armed timer. */
  generation: number;
  delivered: boolean;
  acked: boolean;
  progressMs: number | undefined;
  retransmissions: number;
  sawDrop: boolean;
  heldFrames: number;
}

export function simulateRestore(input: SimInput): SimResult {
  const { indexOf, latencyMs, initialRtoMs } = validate(input);
  const startMs = startTimes(input);
  const flows: FlowState[] = input.flows.map((flow) => {
    const sender = indexOf.get(flow.from) ?? 0;
    const receiver = indexOf.get(flow.to) ?? 0;
    return {
      sender,
      receiver,
      bothRunningMs: Math.max(startMs[sender] ?? 0, startMs[receiver] ?? 0),
      firstTimeoutMs: initialRtoMs - (flow.rtoElapsedMs ?? 0),
      rtoMs: initialRtoMs,
      generation: 0,
      delivered: false,
      acked: false,
      progressMs: undefined,
      retransmissions: 0,
      sawDrop: false,
      heldFrames: 0,
    };
  });
  const sentBy: number[][] = input.vms.map(() => []);
  flows.forEach((flow, index) => sentBy[flow.sender]?.push(index));
  const running = new Uint8Array(input.vms.length);
  const held: ({ flow: number; frame: Frame }[] | undefined)[] = [];
  const queue = new EventQueue<SimEvent>();

  const progress = (flow: FlowState, now: number): void => {
    if (flow.progressMs === undefined && now >= flow.bothRunningMs) flow.progressMs = now;
  };
  const deliver = (now: number, index: number, frame: Frame): void => {
    const flow = flows[index];
    if (flow === undefined) return;
    if (frame === "data") {
      if (!flow.delivered) progress(flow, now);
      flow.delivered = true;
      queue.push(now + latencyMs, { kind: "arrive", flow: index, frame: "ack" });
    } else if (!flow.acked) {
      flow.acked = true;
      flow.generation += 1;
      progress(flow, now);
    }
  };
  const arrive = (now: number, index: number, frame: Frame): void => {
    const flow = flows[index];
    if (flow === undefined) return;
    const to = frame === "data" ? flow.receiver : flow.sender;
    if (running[to] === 1) {
      deliver(now, index, frame);
    } else if (input.hold) {
      flow.heldFrames += 1;
      const queued = held[to] ?? [];
      queued.push({ flow: index, frame });
      held[to] = queued;
    } else {
      flow.sawDrop = true;
    }
  };
  const start = (now: number, vm: number): void => {
    running[vm] = 1;
    const released = held[vm] ?? [];
    held[vm] = undefined;
    for (const frame of released) deliver(now, frame.flow, frame.frame);
    for (const index of sentBy[vm] ?? []) {
      const flow = flows[index];
      if (flow === undefined || flow.acked) continue;
      queue.push(now + flow.firstTimeoutMs, { kind: "rto", flow: index, generation: flow.generation });
    }
  };
  const expire = (now: number, index: number, generation: number): void => {
    const flow = flows[index];
    if (flow === undefined || flow.acked || generation !== flow.generation) return;
    flow.retransmissions += 1;
    queue.push(now + latencyMs, { kind: "arrive", flow: index, frame: "data" });
    flow.rtoMs = Math.min(flow.rtoMs * 2, MAX_RTO_MS);
    queue.push(now + flow.rtoMs, { kind: "rto", flow: index, generation });
  };

  startMs.forEach((at, vm) => queue.push(at, { kind: "start", vm }));
  flows.forEach((flow, index) => {
    if (input.hold) queue.push(0, { kind: "arrive", flow: index, frame: "data" });
    else flow.sawDrop = true;
  });
  for (let event = queue.pop(); event !== undefined; event = queue.pop()) {
    const { time, payload } = event;
    if (payload.kind === "start") start(time, payload.vm);
    else if (payload.kind === "arrive") arrive(time, payload.flow, payload.frame);
    else expire(time, payload.flow, payload.generation);
  }
  return summarize(input, startMs, flows);
}

function summarize(input: SimInput, startMs: Float64Array, flows: FlowState[]): SimResult {
  const results: SimFlowResult[] = flows.map((flow, index) => {
    const { from, to } = input.flows[index] ?? { from: "", to: "" };
    if (flow.progressMs === undefined) {
      throw new HrError("SIM_INTERNAL", `simulation: flow ${from}→${to} never made progress`);
    }
    return {
      from,
      to,
      bothRunningMs: flow.bothRunningMs,
      progressMs: flow.progressMs,
      backoffMs: flow.progressMs - flow.bothRunningMs,
      retransmissions: flow.retransmissions,
      sawDrop: flow.sawDrop,
      heldFrames: flow.heldFrames,
    };
  });
  const backoffs = results.map((flow) => flow.backoffMs);
  const sum = (pick: (flow: SimFlowResult) => number): number =>
    results.reduce((total, flow) => total + pick(flow), 0);
  const clusterLatencyMs = startMs.reduce((latest, at) => Math.max(latest, at), 0);
  return {
    order: input.order,
    hold: input.hold,
    startMs: Object.fromEntries(input.vms.map((vm, index) => [vm.name, startMs[index] ?? 0])),
    clusterLatencyMs,
    medianStartMs: startMs.length === 0 ? 0 : median(Array.from(startMs)),
    lastProgressMs: results.reduce((latest, flow) => Math.max(latest, flow.progressMs), clusterLatencyMs),
    flows: results,
    maxBackoffMs: backoffs.reduce((largest, backoff) => Math.max(largest, backoff), 0),
    medianBackoffMs: backoffs.length === 0 ? 0 : median(backoffs),
    retransmissions: sum((flow) => flow.retransmissions),
    flowsWithDrop: sum((flow) => (flow.sawDrop ? 1 : 0)),
    heldFrames: sum((flow) => flow.heldFrames),
  };
}

/** Each VM's start, in `vms` order. */
function startTimes(input: SimInput): Float64Array {
  const ready = Float64Array.from(input.vms, (vm) => vm.readyMs);
  if (input.order === "as-ready") return ready;
  if (input.order === "simultaneous")
    return ready.fill(ready.reduce((latest, at) => Math.max(latest, at), 0));
  const names = input.vms.map((vm) => vm.name);
  const graph = condenseGraph(names, input.flows);
  const line = planRestoreLine({
    graph,
    vms: input.vms.map((vm) => ({
      name: vm.name,
      readyEstimateMs: vm.readyMs,
      workingSetPages: 0,
      pageCostMs: 0,
    })),
  });
  return Float64Array.from(names, (name) => line.startMs[name] ?? 0);
}

function invalid(message: string): HrError {
  return new HrError("SIM_INVALID_INPUT", `simulation: ${message}`, {
    hint: "every flow must name two distinct listed VMs; times must be finite and non-negative",
  });
}

function validate(input: SimInput): {
  indexOf: Map<string, number>;
  latencyMs: number;
  initialRtoMs: number;
} {
  if (!RESTORE_ORDERS.includes(input.order)) throw invalid(`unknown order '${String(input.order)}'`);
  const latencyMs = input.options?.linkLatencyMs ?? DEFAULT_LINK_LATENCY_MS;
  if (!Number.isFinite(latencyMs) || latencyMs < 0) throw invalid(`link latency ${latencyMs} ms`);
  const srttRtoMs = input.options?.srttRtoMs ?? MIN_RTO_MS;
  if (!Number.isFinite(srttRtoMs) || srttRtoMs <= 0) throw invalid(`srtt-based RTO ${srttRtoMs} ms`);
  const initialRtoMs = Math.min(Math.max(MIN_RTO_MS, srttRtoMs), MAX_RTO_MS);
  const indexOf = new Map<string, number>();
  input.vms.forEach((vm, index) => {
    if (indexOf.has(vm.name)) throw invalid(`VM ${vm.name} is listed twice`);
    if (!Number.isFinite(vm.readyMs) || vm.readyMs < 0) {
      throw invalid(`VM ${vm.name}: ready time must be finite and non-negative, got ${vm.readyMs}`);
    }
    indexOf.set(vm.name, index);
  });
  for (const flow of input.flows) {
    for (const end of [flow.from, flow.to]) {
      if (!indexOf.has(end))
        throw invalid(`flow ${flow.from}→${flow.to} names VM ${end}, which is not listed`);
    }
    if (flow.from === flow.to) throw invalid(`flow ${flow.from}→${flow.to} goes from a VM to itself`);
    const elapsed = flow.rtoElapsedMs ?? 0;
    if (!Number.isFinite(elapsed) || elapsed < 0 || elapsed >= initialRtoMs) {
      throw invalid(
        `flow ${flow.from}→${flow.to}: rtoElapsedMs must be in [0, ${initialRtoMs}), got ${elapsed}`,
      );
    }
  }
  return { indexOf, latencyMs, initialRtoMs };
}
