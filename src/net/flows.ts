import { seqAdd, seqAfter } from "./seq.ts";
import { TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN } from "./tcp.ts";

/**
 * TCP flow table, keyed by the 5-tuple and direction-aware. Pure logic: timestamps come in with
 * each segment (milliseconds, any clock, as long as it is the same one throughout).
 *
 * A flow's two ends are ordered canonically (`a` sorts before `b` as "ip:port" text), so both
 * directions of one connection find the same key: "tcp/10.77.0.1:34567-10.77.0.2:80".
 *
 * Per direction: highest sequence end seen (seq + payload, SYN and FIN counting 1), highest ACK,
 * payload bytes, segments, retransmissions (a segment occupying sequence space whose end is not
 * beyond the highest end already seen in that direction), and progress (new sequence space or an
 * advancing ACK). The first segment seen in a direction sets the baseline and counts as progress:
 * after a restore, `load()` the table saved at the cut so that old data resent by a guest counts
 * as a retransmission and not as progress.
 */
export type Direction = "ab" | "ba";

export interface FlowEnd {
  ip: string;
  port: number;
  /** Switch port (VM name) this end sends from, once seen. */
  vm: string | undefined;
}

export interface DirectionStats {
  segments: number;
  payloadBytes: number;
  retransmissions: number;
  /** Highest seq + sequence length seen; undefined before the first segment. */
  seqEnd: number | undefined;
  /** Highest acknowledgment number seen on a segment with ACK set. */
  highestAck: number | undefined;
  synSeen: boolean;
  finSeen: boolean;
  rstSeen: boolean;
  firstSeen: number | undefined;
  lastSeen: number | undefined;
  lastProgress: number | undefined;
  lastRetransmission: number | undefined;
}

export interface Flow {
  key: string;
  a: FlowEnd;
  b: FlowEnd;
  /** The end that sent a SYN without ACK, if that was seen. */
  initiator: "a" | "b" | undefined;
  ab: DirectionStats;
  ba: DirectionStats;
  firstSeen: number;
  lastSeen: number;
  lastProgress: number | undefined;
}

/** One TCP segment as the switch saw it. */
export interface FlowSegment {
  srcIp: string;
  srcPort: number;
  dstIp: string;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  payloadLength: number;
  /** Switch port the segment came in on. */
  fromVm?: string | undefined;
  /** Switch port it is forwarded to, when the destination MAC is known. */
  toVm?: string | undefined;
}

export interface FlowObservation {
  key: string;
  direction: Direction;
  newFlow: boolean;
  progress: boolean;
  retransmission: boolean;
}

export function flowKey(srcIp: string, srcPort: number, dstIp: string, dstPort: number): string {
  const src = `${srcIp}:${srcPort}`;
  const dst = `${dstIp}:${dstPort}`;
  return src <= dst ? `tcp/${src}-${dst}` : `tcp/${dst}-${src}`;
}

function emptyDirection(): DirectionStats {
  return {
    segments: 0,
    payloadBytes: 0,
    retransmissions: 0,
    seqEnd: undefined,
    highestAck: undefined,
    synSeen: false,
    finSeen: false,
    rstSeen: false,
    firstSeen: undefined,
    lastSeen: undefined,
    lastProgress: undefined,
    lastRetransmission: undefined,
  };
}

function copyFlow(flow: Flow): Flow {
  return { ...flow, a: { ...flow.a }, b: { ...flow.b }, ab: { ...flow.ab }, ba: { ...flow.ba } };
}

export class FlowTable {
  readonly #flows = new Map<string, Flow>();
  readonly #maxFlows: number;
  #evicted = 0;

  /** Beyond `maxFlows`, the flow seen least recently is forgotten (and counted in `evicted`). */
  constructor(options: { maxFlows?: number } = {}) {
    this.#maxFlows = options.maxFlows ?? 65536;
  }

  get size(): number {
    return this.#flows.size;
  }

  get evicted(): number {
    return this.#evicted;
  }

  observe(segment: FlowSegment, t: number): FlowObservation {
    const key = flowKey(segment.srcIp, segment.srcPort, segment.dstIp, segment.dstPort);
    const direction: Direction =
      `${segment.srcIp}:${segment.srcPort}` <= `${segment.dstIp}:${segment.dstPort}` ? "ab" : "ba";
    let flow = this.#flows.get(key);
    const newFlow = flow === undefined;
    if (flow === undefined) {
      flow = this.#create(key, segment, direction, t);
    } else {
      // Re-insert so that Map order is least recently seen first (for eviction).
      this.#flows.delete(key);
      this.#flows.set(key, flow);
    }
    const [sender, receiver] = direction === "ab" ? [flow.a, flow.b] : [flow.b, flow.a];
    if (segment.fromVm !== undefined) sender.vm = segment.fromVm;
    if (segment.toVm !== undefined) receiver.vm = segment.toVm;
    if ((segment.flags & (TCP_SYN | TCP_ACK)) === TCP_SYN) flow.initiator = direction === "ab" ? "a" : "b";

    const stats = direction === "ab" ? flow.ab : flow.ba;
    const { progress, retransmission } = updateDirection(stats, segment, t);
    flow.lastSeen = t;
    if (progress) flow.lastProgress = t;
    return { key, direction, newFlow, progress, retransmission };
  }

  get(key: string): Flow | undefined {
    const flow = this.#flows.get(key);
    return flow === undefined ? undefined : copyFlow(flow);
  }

  /** Every flow, as plain JSON-friendly objects (copies), least recently seen first. */
  flows(): Flow[] {
    return [...this.#flows.values()].map(copyFlow);
  }

  /** Replaces the table's content with flows from an earlier `flows()` (e.g. saved at a snapshot). */
  load(flows: readonly Flow[]): void {
    this.#flows.clear();
    for (const flow of flows) this.#flows.set(flow.key, copyFlow(flow));
  }

  clear(): void {
    this.#flows.clear();
  }

  #create(key: string, segment: FlowSegment, direction: Direction, t: number): Flow {
    const src = { ip: segment.srcIp, port: segment.srcPort, vm: undefined };
    const dst = { ip: segment.dstIp, port: segment.dstPort, vm: undefined };
    const flow: Flow = {
      key,
      a: direction === "ab" ? src : dst,
      b: direction === "ab" ? dst : src,
      initiator: undefined,
      ab: emptyDirection(),
      ba: emptyDirection(),
      firstSeen: t,
      lastSeen: t,
      lastProgress: undefined,
    };
    this.#flows.set(key, flow);
    while (this.#flows.size > this.#maxFlows) {
      const oldest = this.#flows.keys().next();
      if (oldest.done === true) break;
      this.#flows.delete(oldest.value);
      this.#evicted++;
    }
    return flow;
  }
}

function updateDirection(
  stats: DirectionStats,
  segment: FlowSegment,
  t: number,
): { progress: boolean; retransmission: boolean } {
  const seqLength =
    segment.payloadLength + (segment.flags & TCP_SYN ? 1 : 0) + (segment.flags & TCP_FIN ? 1 : 0);
  const segEnd = seqAdd(segment.seq, seqLength);
  let progress = false;
  let retransmission = false;
  if (seqLength > 0) {
    if (stats.seqEnd === undefined || seqAfter(segEnd, stats.seqEnd)) {
      stats.seqEnd = segEnd;
      progress = true;
    } else {
      retransmission = true;
    }
  } else if (stats.seqEnd === undefined) {
    stats.seqEnd = segEnd;
  }
  if (segment.flags & TCP_ACK) {
    if (stats.highestAck === undefined || seqAfter(segment.ack, stats.highestAck)) {
      stats.highestAck = segment.ack >>> 0;
      progress = true;
    }
  }
  stats.segments++;
  stats.payloadBytes += segment.payloadLength;
  if (retransmission) {
    stats.retransmissions++;
    stats.lastRetransmission = t;
  }
  if (segment.flags & TCP_SYN) stats.synSeen = true;
  if (segment.flags & TCP_FIN) stats.finSeen = true;
  if (segment.flags & TCP_RST) stats.rstSeen = true;
  stats.firstSeen ??= t;
  stats.lastSeen = t;
  if (progress) stats.lastProgress = t;
  return { progress, retransmission };
}
