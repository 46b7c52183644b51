import type { Flow, DirectionStats, FlowEnd } from "../../net/flows.ts";
import { parseTcpFrame } from "../../net/packet.ts";
import { seqAfter } from "../../net/seq.ts";
import { sequenceLength } from "../../net/tcp.ts";
import { FLOODED, type TrafficLogEntry } from "../../net/traffic-log.ts";

/**
 * The evidence behind the restore dependency graph's edges (DESIGN.md §6), one function per
 * source. Edge A→B: A will send to B right after the restore, so B must run no later than A.
 * Direction always comes from data (sequence space), never from ACKs:
 *   - "data": a logged TCP segment with payload from A to B (pure ACKs make no edge); or non-TCP
 *     frames (ARP, ICMP, UDP) from A to B adding up to at least `nonTcpMinBytes` in the log.
 *   - "unacked": a TCP direction whose sequence end is beyond the peer's highest ACK at the cut
 *     (serial arithmetic): the sender will retransmit it, so it certainly talks after restore.
 *   - "inflight": a frame held in the switch at the cut, from A to B, that occupies TCP sequence
 *     space (payload, SYN or FIN), or any non-TCP frame: it is delivered to B at restore.
 */
export type EdgeReason = "data" | "inflight" | "unacked";

/** Strongest evidence first: it names an edge's primary `reason`. */
export const REASON_PRIORITY: readonly EdgeReason[] = ["unacked", "inflight", "data"];

/**
 * Non-TCP traffic below this many bytes per ordered pair in the log makes no edge. ARP frames are
 * 42–60 bytes and an ICMP echo 98: the ARP refreshes and occasional pings of a 30 s log window
 * stay well under it, while it is a couple of full-size UDP datagrams. Without it, ARP replies
 * (B answering A's broadcast) would add edges that point the wrong way and merge every pair that
 * ever resolved each other into one component.
 */
export const NON_TCP_MIN_BYTES = 2048;

export interface GraphEdge {
  from: string;
  to: string;
  /** data: frame bytes logged; inflight: frame bytes held; unacked: sequence bytes unacknowledged. */
  bytes: number;
  /** Frames logged or held (unacknowledged data adds bytes, not frames). */
  frames: number;
  /** The strongest of `reasons`. */
  reason: EdgeReason;
  reasons: EdgeReason[];
}

export interface InflightFrameInput {
  to: string;
  /** Sending port; "" when the snapshot did not record it (then it is read from the frame). */
  from: string;
  data: Uint8Array;
}

interface Accumulated {
  /** from's index × node count + to's index: sorting by it sorts by (from, to). */
  key: number;
  from: string;
  to: string;
  bytes: number;
  frames: number;
  reasons: Set<EdgeReason>;
}

/** Collects evidence per ordered pair of known, distinct VMs; anything else is ignored. */
export class EdgeAccumulator {
  readonly #index: ReadonlyMap<string, number>;
  readonly #edges = new Map<number, Accumulated>();

  constructor(nodes: readonly string[]) {
    this.#index = new Map(nodes.map((node, index) => [node, index]));
  }

  /** True if the pair is an edge candidate (both ends known VMs, not a self-loop). */
  accepts(from: string, to: string): boolean {
    return from !== to && this.#index.has(from) && this.#index.has(to);
  }

  add(from: string, to: string, reason: EdgeReason, bytes: number, frames: number): void {
    const fromIndex = this.#index.get(from);
    const toIndex = this.#index.get(to);
    if (fromIndex === undefined || toIndex === undefined || fromIndex === toIndex) return;
    // A number key: no string built per logged frame.
    const key = fromIndex * this.#index.size + toIndex;
    let edge = this.#edges.get(key);
    if (edge === undefined) {
      edge = { key, from, to, bytes: 0, frames: 0, reasons: new Set() };
      this.#edges.set(key, edge);
    }
    edge.bytes += bytes;
    edge.frames += frames;
    edge.reasons.add(reason);
  }

  /** Sorted by (from, to), in the order of `nodes` (sorted by the caller). */
  edges(): GraphEdge[] {
    return [...this.#edges.values()]
      .sort((x, y) => x.key - y.key)
      .map((edge) => {
        const reasons = REASON_PRIORITY.filter((reason) => edge.reasons.has(reason));
        return {
          from: edge.from,
          to: edge.to,
          bytes: edge.bytes,
          frames: edge.frames,
          reason: reasons[0] ?? "data",
          reasons,
        };
      });
  }
}

export function compareText(x: string, y: string): number {
  return x < y ? -1 : x > y ? 1 : 0;
}

/** The other end's VM of a flow, seen from `vm`; undefined if `vm` is neither end. */
function peerOf(flow: Flow | undefined, vm: string): string | undefined {
  if (flow === undefined) return undefined;
  if (flow.a.vm === vm) return flow.b.vm;
  if (flow.b.vm === vm) return flow.a.vm;
  return undefined;
}

export function addLogEdges(
  edges: EdgeAccumulator,
  log: readonly TrafficLogEntry[],
  flowsByKey: ReadonlyMap<string, Flow>,
  nonTcpMinBytes: number,
): void {
  const nonTcp = new Map<string, { from: string; to: string; bytes: number; frames: number }>();
  for (const entry of log) {
    if (entry.tcp !== undefined) {
      if (entry.tcp.len <= 0) continue;
      // A segment flooded to every port (destination MAC not learnt yet) still has one receiver.
      const to = entry.to === FLOODED ? peerOf(flowsByKey.get(entry.tcp.flowKey), entry.from) : entry.to;
      if (to !== undefined) edges.add(entry.from, to, "data", entry.bytes, 1);
      continue;
    }
    if (entry.to === FLOODED || !edges.accepts(entry.from, entry.to)) continue;
    const key = `${entry.from}\u0000${entry.to}`;
    const pair = nonTcp.get(key) ?? { from: entry.from, to: entry.to, bytes: 0, frames: 0 };
    pair.bytes += entry.bytes;
    pair.frames += 1;
    nonTcp.set(key, pair);
  }
  for (const pair of nonTcp.values()) {
    if (pair.bytes >= nonTcpMinBytes) edges.add(pair.from, pair.to, "data", pair.bytes, pair.frames);
  }
}

export function addUnackedEdges(edges: EdgeAccumulator, flows: readonly Flow[]): void {
  for (const flow of flows) {
    // A reset connection retransmits nothing.
    if (flow.ab.rstSeen || flow.ba.rstSeen) continue;
    addUnacked(edges, flow.a, flow.b, flow.ab, flow.ba);
    addUnacked(edges, flow.b, flow.a, flow.ba, flow.ab);
  }
}

function addUnacked(
  edges: EdgeAccumulator,
  sender: FlowEnd,
  receiver: FlowEnd,
  sent: DirectionStats,
  acked: DirectionStats,
): void {
  if (sender.vm === undefined || receiver.vm === undefined || sent.seqEnd === undefined) return;
  const occupiesSequence = sent.payloadBytes > 0 || sent.synSeen || sent.finSeen;
  if (!occupiesSequence) return;
  if (acked.highestAck === undefined) {
    edges.add(sender.vm, receiver.vm, "unacked", sent.payloadBytes, 0);
  } else if (seqAfter(sent.seqEnd, acked.highestAck)) {
    edges.add(sender.vm, receiver.vm, "unacked", (sent.seqEnd - acked.highestAck) >>> 0, 0);
  }
}

/** Adds the in-flight frames' edges; returns how many frames' sender could not be told. */
export function addInflightEdges(
  edges: EdgeAccumulator,
  inflight: readonly InflightFrameInput[],
  senderOf: (frame: Buffer) => string | undefined,
): number {
  let unattributed = 0;
  for (const held of inflight) {
    const data = Buffer.from(held.data.buffer, held.data.byteOffset, held.data.byteLength);
    const tcp = parseTcpFrame(data);
    if (tcp !== undefined && sequenceLength(tcp.tcp) === 0) continue;
    const from = held.from !== "" ? held.from : senderOf(data);
    if (from === undefined || !edges.accepts(from, held.to)) {
      if (from !== held.to) unattributed += 1;
      continue;
    }
    edges.add(from, held.to, "inflight", data.length, 1);
  }
  return unattributed;
}
