import { EventEmitter } from "node:events";
import { mkdir } from "node:fs/promises";
import type { Server } from "node:net";
import { join } from "node:path";
import { HrError } from "../util/errors.ts";
import type { FlowTable } from "./flows.ts";
import { isGroupMac, macKey, macKeyToString, parseMac } from "./mac.ts";
import { PcapFileWriter } from "./pcap-file.ts";
import { SwitchPort, type DeliveryCounts, type PortCallbacks, type PortCounters } from "./switch-port.ts";
import { closePortServer, listenPortServer } from "./switch-socket.ts";
import {
  TrafficMonitor,
  type FlowInfo,
  type TcpEvent,
  type TrafficMonitorOptions,
  type TrafficPair,
} from "./traffic-monitor.ts";
import type { TrafficLogEntry } from "./traffic-log.ts";

/**
 * The cluster's Ethernet switch, sensor and valve. One unix socket per VM ("port"), QEMU's
 * `-netdev stream` framing on each. A VM's port is bound to the VM's MAC (PortOptions.mac): frames
 * from it with any other source MAC are dropped, so a guest can neither forge another VM's MAC nor
 * take its traffic, and unicast to a MAC no VM owns goes nowhere (there is no port to the host).
 * Ports without a MAC learn source MACs like a plain switch (broadcast, multicast and unknown
 * unicast are flooded to every other port that learns). It records what it forwards: a per-pair
 * traffic matrix, per-port counters, a TCP flow table, a bounded traffic log, optional pcap files.
 * Delivery to any port can be held (queued in order, bounded), released, read out and injected.
 *
 * Events (EventEmitter, rare): see SwitchEvents. Per-frame data (costs nothing unless subscribed):
 * diagnostics_channel "hotrestore:net:frame" (TrafficLogEntry) and "hotrestore:net:tcp"
 * ({ t, from, observation }).
 */
export type SwitchErrorCode =
  | "SWITCH_PORT_NAME_INVALID"
  | "SWITCH_PORT_EXISTS"
  | "SWITCH_PORT_UNKNOWN"
  | "SWITCH_MAC_IN_USE"
  | "SWITCH_SOCKET_PATH_TOO_LONG"
  | "SWITCH_SOCKET_IN_USE"
  | "SWITCH_LISTEN_FAILED"
  | "SWITCH_CLOSED";

const PORT_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export type { DeliveryCounts, FlowInfo, PortCounters, TrafficPair };
export { frameChannel, tcpChannel } from "./traffic-monitor.ts";
export { FLOODED } from "./traffic-log.ts";

/** The subset of a pino logger the switch uses. */
export interface SwitchLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface SwitchOptions extends TrafficMonitorOptions {
  /** Directory of the port sockets (created 0700 if missing). */
  dir: string;
  /** Milliseconds; Date.now by default. Used for the traffic log, flows and pcap timestamps. */
  clock?: () => number;
  logger?: SwitchLogger;
  /** Bound of each port's hold queue; oldest frames are dropped beyond it. Default 64 MiB. */
  maxHoldBytes?: number;
  /** Unsent bytes a port's connection may have before frames to it are dropped. Default 8 MiB. */
  maxSocketBufferBytes?: number;
}

export interface PortOptions {
  /** Queue (instead of drop) frames for this port while no QEMU is connected. Default false. */
  holdWhileDisconnected?: boolean;
  /**
   * The VM's MAC: the port is bound to it. Frames from the port with any other source MAC are
   * dropped, the MAC is always delivered to this port (never learned elsewhere), and unicast to
   * a MAC no port owns is not flooded to it. Without it the port learns MACs like a plain switch.
   */
  mac?: string;
}

export interface PortInfo {
  name: string;
  socketPath: string;
  connected: boolean;
  held: boolean;
  holdWhileDisconnected: boolean;
  heldFrames: number;
  heldBytes: number;
  capture: string | undefined;
  macs: string[];
  counters: PortCounters;
}

export interface SwitchEvents {
  "port-connected": [{ port: string; replaced: boolean }];
  "port-disconnected": [{ port: string; error: unknown }];
  "port-protocol-error": [{ port: string; error: unknown }];
  "mac-moved": [{ mac: string; from: string; to: string }];
  /** A TCP segment forwarded (emitted only while someone listens). */
  tcp: [TcpEvent];
}

export class VirtualSwitch extends EventEmitter<SwitchEvents> {
  readonly dir: string;
  readonly #clock: () => number;
  readonly #logger: SwitchLogger | undefined;
  readonly #maxHoldBytes: number;
  readonly #maxSocketBufferBytes: number;
  readonly #ports = new Map<string, SwitchPort>();
  readonly #macs = new Map<number, SwitchPort>();
  /** MACs bound to a port (PortOptions.mac): never learned on, or moved to, another port. */
  readonly #bound = new Set<number>();
  readonly #monitor: TrafficMonitor;
  readonly #pending = new Set<string>();
  readonly #callbacks: PortCallbacks;
  #captureDir: string | undefined;
  #closed = false;

  constructor(options: SwitchOptions) {
    super();
    this.dir = options.dir;
    this.#clock = options.clock ?? Date.now;
    this.#logger = options.logger;
    this.#maxHoldBytes = options.maxHoldBytes ?? 64 * 1024 * 1024;
    this.#maxSocketBufferBytes = options.maxSocketBufferBytes ?? 8 * 1024 * 1024;
    this.#monitor = new TrafficMonitor({
      trafficLog: options.trafficLog,
      maxFlows: options.maxFlows,
      onTcp: (event) => {
        if (this.listenerCount("tcp") > 0) this.emit("tcp", event);
      },
    });
    this.#callbacks = {
      onFrame: (port, frame) => this.#forward(port, frame),
      onConnect: (port, replaced) => {
        this.#logger?.info({ port: port.name, replaced }, "switch port connected");
        this.emit("port-connected", { port: port.name, replaced });
      },
      onDisconnect: (port, error) => {
        this.#logger?.info({ port: port.name, error }, "switch port disconnected");
        this.emit("port-disconnected", { port: port.name, error });
      },
      onProtocolError: (port, error) => {
        this.#logger?.warn({ port: port.name, error }, "switch port broke the framing, disconnected it");
        this.emit("port-protocol-error", { port: port.name, error });
      },
      now: this.#clock,
    };
  }

  /** Creates the port's socket `dir/<name>.sock` (mode 0600) and returns its path. */
  async addPort(name: string, options: PortOptions = {}): Promise<string> {
    if (this.#closed) throw new HrError("SWITCH_CLOSED", "the switch is closed");
    if (!PORT_NAME_PATTERN.test(name)) {
      throw new HrError("SWITCH_PORT_NAME_INVALID", `bad switch port name ${JSON.stringify(name)}`, {
        hint: "use letters, digits, '.', '_' and '-' (up to 64), starting with a letter or digit",
      });
    }
    if (this.#ports.has(name) || this.#pending.has(name)) {
      throw new HrError("SWITCH_PORT_EXISTS", `switch port ${name} already exists`);
    }
    const mac = options.mac === undefined ? undefined : this.#bindable(name, options.mac);
    const socketPath = join(this.dir, `${name}.sock`);
    this.#pending.add(name);
    let server: Server;
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      server = await listenPortServer(socketPath);
    } finally {
      this.#pending.delete(name);
    }
    if (this.#closed) {
      await closePortServer(server, socketPath);
      throw new HrError("SWITCH_CLOSED", `the switch closed while port ${name} was being added`);
    }
    const port = new SwitchPort({
      name,
      socketPath,
      server,
      holdWhileDisconnected: options.holdWhileDisconnected ?? false,
      maxHoldBytes: this.#maxHoldBytes,
      maxSocketBufferBytes: this.#maxSocketBufferBytes,
      callbacks: this.#callbacks,
      mac,
    });
    if (mac !== undefined) {
      if (this.#bound.has(mac)) {
        await closePortServer(server, socketPath);
        throw this.#macInUse(name, mac);
      }
      this.#bound.add(mac);
      this.#macs.set(mac, port);
    }
    this.#ports.set(name, port);
    if (this.#captureDir !== undefined) await this.startCapture(name, join(this.#captureDir, `${name}.pcap`));
    return socketPath;
  }

  /** Closes the port's server, connection and capture; forgets its MACs and queued frames. */
  async removePort(name: string): Promise<void> {
    const port = this.#port(name);
    this.#ports.delete(name);
    for (const [mac, owner] of this.#macs) if (owner === port) this.#macs.delete(mac);
    if (port.mac !== undefined) this.#bound.delete(port.mac);
    port.discardQueued();
    port.disconnect();
    await this.stopCapture(name);
    await closePortServer(port.server, port.socketPath);
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#captureDir = undefined;
    await Promise.all([...this.#ports.keys()].map((name) => this.removePort(name)));
  }

  ports(): PortInfo[] {
    return [...this.#ports.values()].map((port) => this.#portInfo(port));
  }

  port(name: string): PortInfo {
    return this.#portInfo(this.#port(name));
  }

  /** Drops the port's current QEMU connection (the port stays and accepts a new one). */
  disconnect(name: string): void {
    this.#port(name).disconnect();
  }

  setHoldWhileDisconnected(name: string, on: boolean): void {
    const port = this.#port(name);
    port.holdWhileDisconnected = on;
    if (!on && !port.held && !port.connected) port.counters.dropsDisconnected += port.discardQueued();
  }

  macTable(): { mac: string; port: string }[] {
    return [...this.#macs].map(([key, port]) => ({ mac: macKeyToString(key), port: port.name }));
  }

  /** Frames and bytes per (source port, destination port); flooded frames under to = "*". */
  traffic(): TrafficPair[] {
    return this.#monitor.traffic();
  }

  flows(): FlowInfo[] {
    return this.#monitor.flows(this.#clock());
  }

  /** The flow table itself, e.g. to `load()` flows saved at a snapshot before a restore. */
  get flowTable(): FlowTable {
    return this.#monitor.flowTable;
  }

  /** Logged frames with t >= since (all by default), oldest first. */
  trafficLog(since?: number): TrafficLogEntry[] {
    return this.#monitor.trafficLog(this.#clock(), since);
  }

  /** Queue frames for this port, in order, instead of delivering them. */
  hold(name: string): void {
    this.#port(name).held = true;
  }

  /** Deliver the queued frames in order, then resume normal delivery. */
  release(name: string): DeliveryCounts {
    const port = this.#port(name);
    port.held = false;
    return port.flush();
  }

  /**
   * Drops every frame for this port until unblocked (a held port still queues): how the restore
   * baselines treat a VM that is not running yet, like a host bridge with the VM's tap down.
   */
  block(name: string, on: boolean): void {
    this.#port(name).blocked = on;
  }

  holdAll(): void {
    for (const port of this.#ports.values()) port.held = true;
  }

  releaseAll(): DeliveryCounts {
    const total: DeliveryCounts = { sent: 0, queued: 0, dropped: 0 };
    for (const name of this.#ports.keys()) {
      const counts = this.release(name);
      total.sent += counts.sent;
      total.queued += counts.queued;
      total.dropped += counts.dropped;
    }
    return total;
  }

  /** Copies of the frames queued for the port, in order (e.g. to save them in a snapshot). */
  heldFrames(name: string): Buffer[] {
    return this.#port(name).queuedFrames();
  }

  /** Forgets the frames queued for the port; returns how many there were. */
  discardHeld(name: string): number {
    return this.#port(name).discardQueued();
  }

  /** Delivers frames to the port in order (queued if it is held). Not counted as traffic or flows. */
  inject(name: string, frames: readonly Buffer[]): DeliveryCounts {
    const port = this.#port(name);
    const result: DeliveryCounts = { sent: 0, queued: 0, dropped: 0 };
    for (const frame of frames) {
      port.counters.injected++;
      result[port.deliver(frame)]++;
    }
    return result;
  }

  /** Writes every frame the port receives or sends to a pcap file (replacing an earlier capture). */
  async startCapture(name: string, file: string): Promise<void> {
    const port = this.#port(name);
    const writer = await PcapFileWriter.open(file);
    const previous = port.capture;
    port.capture = writer;
    await previous?.close();
  }

  async stopCapture(name: string): Promise<void> {
    const port = this.#ports.get(name);
    const writer = port?.capture;
    if (port === undefined || writer === undefined) return;
    port.capture = undefined;
    await writer.close();
  }

  /** Captures every port, present and future, to `dir/<port>.pcap`. */
  async captureAll(dir: string): Promise<void> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    this.#captureDir = dir;
    for (const name of this.#ports.keys()) await this.startCapture(name, join(dir, `${name}.pcap`));
  }

  async stopCaptureAll(): Promise<void> {
    this.#captureDir = undefined;
    for (const name of this.#ports.keys()) await this.stopCapture(name);
  }

  #port(name: string): SwitchPort {
    const port = this.#ports.get(name);
    if (port === undefined) {
      throw new HrError("SWITCH_PORT_UNKNOWN", `no switch port named ${name}`, {
        hint: `known ports: ${[...this.#ports.keys()].join(", ") || "none"}`,
      });
    }
    return port;
  }

  #portInfo(port: SwitchPort): PortInfo {
    const macs = [...this.#macs].filter(([, owner]) => owner === port).map(([key]) => macKeyToString(key));
    return {
      name: port.name,
      socketPath: port.socketPath,
      connected: port.connected,
      held: port.held,
      holdWhileDisconnected: port.holdWhileDisconnected,
      heldFrames: port.heldFrames,
      heldBytes: port.heldBytes,
      capture: port.capture?.path,
      macs,
      counters: { ...port.counters },
    };
  }

  #bindable(name: string, text: string): number {
    const bytes = parseMac(text);
    if (isGroupMac(bytes)) {
      throw new HrError("MAC_INVALID", `port ${name}: ${text} is a group (multicast) MAC, not a VM's`);
    }
    const key = macKey(bytes);
    if (this.#bound.has(key)) throw this.#macInUse(name, key);
    return key;
  }

  #macInUse(name: string, key: number): HrError {
    const owner = this.#macs.get(key)?.name ?? "another port";
    return new HrError("SWITCH_MAC_IN_USE", `port ${name}: MAC ${macKeyToString(key)} is bound to ${owner}`);
  }

  #forward(from: SwitchPort, frame: Buffer): void {
    if (frame.length < 14) {
      from.counters.rxMalformed++;
      return;
    }
    const source = macKey(frame, 6);
    if (from.mac !== undefined ? source !== from.mac : this.#bound.has(source)) {
      from.counters.rxSpoofed++;
      return;
    }
    if (from.mac === undefined && !isGroupMac(frame, 6)) this.#learn(source, from);
    const to = isGroupMac(frame, 0) ? undefined : this.#macs.get(macKey(frame, 0));
    if (to === from) {
      from.counters.rxFiltered++;
      return;
    }
    this.#monitor.record(frame, from.name, to?.name, this.#clock());
    if (to !== undefined) {
      to.deliver(frame);
      return;
    }
    // Broadcast and multicast go to every other port; unknown unicast only to ports that learn.
    const group = isGroupMac(frame, 0);
    let delivered = false;
    for (const port of this.#ports.values()) {
      if (port === from || (!group && port.mac !== undefined)) continue;
      port.deliver(frame);
      delivered = true;
    }
    if (!delivered && !group) from.counters.rxUnknownDst++;
  }

  #learn(key: number, port: SwitchPort): void {
    const known = this.#macs.get(key);
    if (known === port) return;
    this.#macs.set(key, port);
    if (known !== undefined) {
      const move = { mac: macKeyToString(key), from: known.name, to: port.name };
      this.#logger?.warn(move, "MAC address moved to another switch port");
      this.emit("mac-moved", move);
    }
  }
}
