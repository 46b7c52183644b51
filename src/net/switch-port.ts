import type { Server, Socket } from "node:net";
import { isHrError } from "../util/errors.ts";
import { encodeFrame, FrameDecoder } from "./frame-stream.ts";
import { HoldQueue } from "./hold-queue.ts";
import type { PcapFileWriter } from "./pcap-file.ts";

/**
 * One port of the virtual switch: a unix socket server that one QEMU at a time connects to
 * (a new connection replaces the old one), its counters, its hold queue and its capture file.
 * The switch owns the server's lifecycle; the port owns delivery to its connection.
 */
export interface PortCounters {
  /** Frames and bytes received from the VM (bytes are Ethernet frame lengths). */
  rxFrames: number;
  rxBytes: number;
  /** Frames and bytes written to the VM's connection. */
  txFrames: number;
  txBytes: number;
  /** Received frames too short for an Ethernet header. */
  rxMalformed: number;
  /** Received frames whose destination MAC is on the same port (not sent back). */
  rxFiltered: number;
  /**
   * Received frames dropped for their source MAC: not the MAC the port is bound to, or (on a
   * port without one) a MAC bound to another port. A guest cannot take another VM's traffic.
   */
  rxSpoofed: number;
  /** Received unicast frames for a MAC no port owns, delivered nowhere (no port learns MACs). */
  rxUnknownDst: number;
  /** Frames for this port dropped because no QEMU was connected and the port was not held. */
  dropsDisconnected: number;
  /**
   * Frames for this port dropped because it was blocked: its VM is not running and the restore
   * models a host bridge, which drops frames for a tap whose VM is not running yet.
   */
  dropsBlocked: number;
  /** Frames dropped because the connection had too much unsent data (the VM reads too slowly). */
  dropsBackpressure: number;
  /** Frames dropped from the hold queue because it passed its byte bound (oldest first). */
  holdDropped: number;
  holdDroppedBytes: number;
  /** Connections dropped for a framing violation (e.g. an oversized length). */
  protocolErrors: number;
  /** Connections accepted, and those that replaced a live one. */
  connections: number;
  replacedConnections: number;
  /** Frames handed to `inject`. */
  injected: number;
}

export type DeliveryResult = "sent" | "queued" | "dropped";
export type DeliveryCounts = Record<DeliveryResult, number>;

export interface PortCallbacks {
  onFrame(port: SwitchPort, frame: Buffer): void;
  onConnect(port: SwitchPort, replaced: boolean): void;
  onDisconnect(port: SwitchPort, error: unknown): void;
  onProtocolError(port: SwitchPort, error: unknown): void;
  now(): number;
}

function zeroCounters(): PortCounters {
  return {
    rxFrames: 0,
    rxBytes: 0,
    txFrames: 0,
    txBytes: 0,
    rxMalformed: 0,
    rxFiltered: 0,
    rxSpoofed: 0,
    rxUnknownDst: 0,
    dropsDisconnected: 0,
    dropsBlocked: 0,
    dropsBackpressure: 0,
    holdDropped: 0,
    holdDroppedBytes: 0,
    protocolErrors: 0,
    connections: 0,
    replacedConnections: 0,
    injected: 0,
  };
}

export class SwitchPort {
  readonly name: string;
  readonly socketPath: string;
  readonly server: Server;
  readonly counters: PortCounters = zeroCounters();
  /** The MAC (macKey) this port is bound to: the only source MAC accepted from it. */
  readonly mac: number | undefined;
  held = false;
  /** Drop every frame for this port (takes precedence over nothing: a held port queues). */
  blocked = false;
  holdWhileDisconnected: boolean;
  capture: PcapFileWriter | undefined;
  readonly #queue: HoldQueue;
  readonly #maxSocketBufferBytes: number;
  readonly #callbacks: PortCallbacks;
  #socket: Socket | undefined;

  constructor(options: {
    name: string;
    socketPath: string;
    server: Server;
    holdWhileDisconnected: boolean;
    maxHoldBytes: number;
    maxSocketBufferBytes: number;
    callbacks: PortCallbacks;
    mac?: number | undefined;
  }) {
    this.name = options.name;
    this.mac = options.mac;
    this.socketPath = options.socketPath;
    this.server = options.server;
    this.holdWhileDisconnected = options.holdWhileDisconnected;
    this.#queue = new HoldQueue(options.maxHoldBytes);
    this.#maxSocketBufferBytes = options.maxSocketBufferBytes;
    this.#callbacks = options.callbacks;
    this.server.on("connection", (socket) => this.#attach(socket));
  }

  get connected(): boolean {
    return this.#socket !== undefined;
  }

  get heldFrames(): number {
    return this.#queue.frames;
  }

  get heldBytes(): number {
    return this.#queue.bytes;
  }

  /** Copies of the queued frames, in order. */
  queuedFrames(): Buffer[] {
    return this.#queue.peek();
  }

  /** Sends the frame now, queues it (held, or disconnected with holdWhileDisconnected), or drops it. */
  deliver(frame: Buffer): DeliveryResult {
    if (this.blocked && !this.held) {
      this.counters.dropsBlocked++;
      return "dropped";
    }
    if (this.held || (this.#socket === undefined && this.holdWhileDisconnected)) {
      this.#queue.push(frame);
      this.#syncHoldCounters();
      return "queued";
    }
    return this.#write(frame);
  }

  /**
   * Removes the queued frames and delivers them in order: sent, queued again (disconnected with
   * holdWhileDisconnected) or dropped (disconnected, or backpressure).
   */
  flush(): DeliveryCounts {
    const counts: DeliveryCounts = { sent: 0, queued: 0, dropped: 0 };
    for (const frame of this.#queue.drain()) counts[this.deliver(frame)]++;
    return counts;
  }

  /** Forgets the queued frames; returns how many there were. */
  discardQueued(): number {
    return this.#queue.drain().length;
  }

  /** Closes the current connection, if any (QEMU sees EOF). */
  disconnect(): void {
    this.#socket?.destroy();
  }

  #write(frame: Buffer): DeliveryResult {
    const socket = this.#socket;
    if (socket === undefined || !socket.writable) {
      this.counters.dropsDisconnected++;
      return "dropped";
    }
    if (socket.writableLength + frame.length > this.#maxSocketBufferBytes) {
      this.counters.dropsBackpressure++;
      return "dropped";
    }
    socket.write(encodeFrame(frame));
    this.counters.txFrames++;
    this.counters.txBytes += frame.length;
    this.capture?.write(frame, this.#callbacks.now());
    return "sent";
  }

  #syncHoldCounters(): void {
    this.counters.holdDropped = this.#queue.dropped;
    this.counters.holdDroppedBytes = this.#queue.droppedBytes;
  }

  #attach(socket: Socket): void {
    const previous = this.#socket;
    this.#socket = socket;
    this.counters.connections++;
    if (previous !== undefined) {
      this.counters.replacedConnections++;
      previous.destroy();
    }
    const decoder = new FrameDecoder();
    const onFrame = (frame: Buffer): void => {
      if (this.#socket !== socket) return;
      this.counters.rxFrames++;
      this.counters.rxBytes += frame.length;
      this.capture?.write(frame, this.#callbacks.now());
      this.#callbacks.onFrame(this, frame);
    };
    socket.on("data", (chunk: Buffer) => {
      try {
        decoder.decode(chunk, onFrame);
      } catch (error) {
        if (!isHrError(error)) throw error;
        this.counters.protocolErrors++;
        socket.destroy();
        this.#callbacks.onProtocolError(this, error);
      }
    });
    let lastError: unknown;
    socket.on("error", (error) => {
      lastError = error;
    });
    socket.on("close", () => {
      if (this.#socket !== socket) return;
      this.#socket = undefined;
      this.#callbacks.onDisconnect(this, lastError);
    });
    this.#callbacks.onConnect(this, previous !== undefined);
    if (!this.held && this.#queue.frames > 0) this.flush();
  }
}
