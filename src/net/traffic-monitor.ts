import { channel } from "node:diagnostics_channel";
import { FlowTable, type Flow, type FlowObservation } from "./flows.ts";
import { parseTcpFrame } from "./packet.ts";
import { FLOODED, TrafficLog, type TrafficLogEntry, type TrafficLogTcp } from "./traffic-log.ts";

/**
 * The switch as a sensor: everything it learns from the frames it forwards, by port name. A
 * per-pair traffic matrix (flooded frames under to = FLOODED), the TCP flow table and the bounded
 * traffic log. Pure logic: the switch passes each frame with its ports and time.
 *
 * Per-frame diagnostics_channel messages, free when nobody subscribes:
 * "hotrestore:net:frame" carries each TrafficLogEntry, "hotrestore:net:tcp" { t, from, observation }.
 */
export const frameChannel = channel("hotrestore:net:frame");
export const tcpChannel = channel("hotrestore:net:tcp");

export interface TrafficPair {
  from: string;
  /** Destination port, or FLOODED ("*") for frames flooded from `from`. */
  to: string;
  frames: number;
  bytes: number;
}

export interface FlowInfo extends Flow {
  /** Milliseconds since the flow's last segment, by the switch's clock. */
  lastSeenAgoMs: number;
}

export interface TrafficMonitorOptions {
  trafficLog?: { maxEntries?: number; maxAgeMs?: number };
  maxFlows?: number;
  /** Called for every TCP segment observed, after the flow table took it in. */
  onTcp?: (event: TcpEvent) => void;
}

export interface TcpEvent {
  t: number;
  from: string;
  observation: FlowObservation;
}

export class TrafficMonitor {
  readonly flowTable: FlowTable;
  readonly #log: TrafficLog;
  readonly #matrix = new Map<string, TrafficPair>();
  readonly #onTcp: ((event: TcpEvent) => void) | undefined;

  constructor(options: TrafficMonitorOptions = {}) {
    this.#onTcp = options.onTcp;
    this.flowTable = new FlowTable({ maxFlows: options.maxFlows });
    this.#log = new TrafficLog(options.trafficLog);
  }

  /** Accounts one forwarded frame; `to` is undefined for a flooded frame. */
  record(frame: Buffer, from: string, to: string | undefined, t: number): void {
    const toName = to ?? FLOODED;
    const tcp = this.#observeTcp(frame, from, to, t);
    const entry: TrafficLogEntry =
      tcp === undefined
        ? { t, from, to: toName, bytes: frame.length }
        : { t, from, to: toName, bytes: frame.length, tcp };
    this.#log.push(entry);
    if (frameChannel.hasSubscribers) frameChannel.publish(entry);
    this.#count(from, toName, frame.length);
  }

  traffic(): TrafficPair[] {
    return [...this.#matrix.values()].map((pair) => ({ ...pair }));
  }

  flows(now: number): FlowInfo[] {
    return this.flowTable.flows().map((flow) => ({ ...flow, lastSeenAgoMs: now - flow.lastSeen }));
  }

  trafficLog(now: number, since?: number): TrafficLogEntry[] {
    this.#log.prune(now);
    return this.#log.entries(since);
  }

  #count(from: string, to: string, bytes: number): void {
    const key = `${from}\u0000${to}`;
    let pair = this.#matrix.get(key);
    if (pair === undefined) {
      pair = { from, to, frames: 0, bytes: 0 };
      this.#matrix.set(key, pair);
    }
    pair.frames++;
    pair.bytes += bytes;
  }

  #observeTcp(frame: Buffer, from: string, to: string | undefined, t: number): TrafficLogTcp | undefined {
    const parsed = parseTcpFrame(frame);
    if (parsed === undefined) return undefined;
    const { ip, tcp } = parsed;
    const segment = {
      srcIp: ip.src,
      srcPort: tcp.srcPort,
      dstIp: ip.dst,
      dstPort: tcp.dstPort,
      seq: tcp.seq,
      ack: tcp.ack,
      flags: tcp.flags,
      payloadLength: tcp.payload.length,
      fromVm: from,
      toVm: to,
    };
    const observation = this.flowTable.observe(segment, t);
    if (tcpChannel.hasSubscribers) tcpChannel.publish({ t, from, observation });
    this.#onTcp?.({ t, from, observation });
    const len = tcp.payload.length;
    return { flowKey: observation.key, seq: tcp.seq, ack: tcp.ack, len, flags: tcp.flags };
  }
}
