import type { Socket } from "node:net";
import { HrError, messageOf } from "../util/errors.ts";
import { QmpCommandError, qmpError } from "./errors.ts";
import { EventHub, type WaitForEventOptions } from "./events.ts";
import { encodeCommand, QmpDecoder } from "./framing.ts";
import { connectUnixWithRetry } from "./socket.ts";
import type {
  QmpCommandArgs,
  QmpCommandName,
  QmpCommandResult,
  QmpEvent,
  QmpEventName,
  QmpGreeting,
  QmpServerMessage,
  QmpVersion,
} from "./types.ts";

export interface QmpConnectOptions {
  /** Budget for the whole connect: socket retries, greeting and capability negotiation. */
  timeoutMs: number;
  /** How long (ms from the call) a missing or refused socket is retried; default and cap: timeoutMs. */
  retryUntilMs?: number;
  /** Reply timeout for execute() calls that give none; default 30 s. */
  commandTimeoutMs?: number;
  /** Largest accepted QMP line; default 16 MiB. */
  maxMessageBytes?: number;
}

export interface ExecuteOptions {
  timeoutMs?: number;
}

/** Arguments after the command name: optional when the command takes none or only optional ones. */
export type ExecuteRest<K extends QmpCommandName> =
  undefined extends QmpCommandArgs<K>
    ? [args?: QmpCommandArgs<K>, options?: ExecuteOptions]
    : [args: QmpCommandArgs<K>, options?: ExecuteOptions];

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: HrError) => void;
  timer: NodeJS.Timeout;
}

/**
 * One QMP connection. States: greeting -> negotiating -> ready -> closed (closed is terminal and
 * reachable from every state). connect() returns only a ready client. Replies are matched to calls
 * by numeric id, so they may come back in any order; events go to on("event") listeners and to
 * waitForEvent() waiters. When the connection ends every pending call rejects with QMP_CLOSED,
 * except `quit`, which succeeds: QEMU exiting is what it asked for.
 */
export class QmpClient {
  readonly socketPath: string;
  /** Resolves once the socket is fully closed, whoever closed it. Never rejects. */
  readonly closed: Promise<void>;
  readonly #socket: Socket;
  readonly #decoder: QmpDecoder;
  readonly #events = new EventHub();
  readonly #pending = new Map<number, Pending>();
  readonly #commandTimeoutMs: number;
  #state: "greeting" | "negotiating" | "ready" | "closed" = "greeting";
  #nextId = 1;
  #greeting: QmpGreeting | undefined;
  readonly #greeted: Promise<void>;
  #settleGreeting: { resolve: () => void; reject: (error: HrError) => void } | undefined;
  #closeReason: HrError | undefined;

  private constructor(socket: Socket, socketPath: string, options: QmpConnectOptions) {
    this.socketPath = socketPath;
    this.#socket = socket;
    this.#decoder = new QmpDecoder(options.maxMessageBytes);
    this.#commandTimeoutMs = options.commandTimeoutMs ?? 30_000;
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
    this.#greeted = new Promise((resolve, reject) => (this.#settleGreeting = { resolve, reject }));
    this.#greeted.catch(() => undefined); // awaited by #handshake; may also reject after it gave up
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    // Errors (e.g. ECONNRESET as QEMU exits) and EOF both mean the peer went away.
    socket.on("error", (error) =>
      this.#shutdown(peerGone(`QMP socket error: ${error.message}`, error), true),
    );
    socket.on("close", () => this.#shutdown(peerGone(`QEMU closed the QMP connection ${socketPath}`), true));
  }

  static async connect(socketPath: string, options: QmpConnectOptions): Promise<QmpClient> {
    const started = Date.now();
    const retryMs = Math.min(options.retryUntilMs ?? options.timeoutMs, options.timeoutMs);
    const socket = await connectUnixWithRetry(socketPath, started + retryMs);
    const client = new QmpClient(socket, socketPath, options);
    try {
      await client.#handshake(started + options.timeoutMs);
    } catch (error) {
      client.close();
      throw error;
    }
    return client;
  }

  /** QEMU's version from the greeting, e.g. {qemu: {major: 7, minor: 2, micro: 22}, package: "..."}. */
  get version(): QmpVersion {
    return this.#greeting!.QMP.version;
  }

  /** Capabilities QEMU offered in the greeting (7.2 offers ["oob"]; we enable none). */
  get capabilities(): readonly string[] {
    return this.#greeting!.QMP.capabilities;
  }

  get isClosed(): boolean {
    return this.#state === "closed";
  }

  /** Why the connection closed (QMP_CLOSED, or QMP_PROTOCOL if QEMU sent garbage); undefined while open. */
  get closeReason(): HrError | undefined {
    return this.#closeReason;
  }

  execute<K extends QmpCommandName>(command: K, ...rest: ExecuteRest<K>): Promise<QmpCommandResult<K>> {
    const [args, options] = rest;
    // The result's shape is trusted to match QEMU 7.2's schema (commands.ts), not checked at runtime.
    return this.executeRaw(command, args, options);
  }

  /** Any command, untyped. Rejects with QMP_COMMAND_FAILED (a QmpCommandError), QMP_TIMEOUT or QMP_CLOSED. */
  executeRaw(command: string, args?: object, options: ExecuteOptions = {}): Promise<unknown> {
    if (this.#state === "closed") {
      const reason = this.#closeReason;
      return Promise.reject(closed(`${command}: QMP connection ${this.socketPath} is closed`, reason));
    }
    const id = this.#nextId++;
    const timeoutMs = options.timeoutMs ?? this.#commandTimeoutMs;
    let frame: Buffer;
    try {
      frame = encodeCommand({ execute: command, arguments: args, id });
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        const hint = "QEMU may be stuck or busy; the command may still take effect later";
        reject(qmpError("QMP_TIMEOUT", `${command}: no reply from QEMU within ${timeoutMs} ms`, { hint }));
      }, timeoutMs);
      this.#pending.set(id, { command, resolve, reject, timer });
      this.#socket.write(frame);
    });
  }

  on(type: "event", listener: (event: QmpEvent) => void): this {
    if (type === "event") this.#events.on(listener);
    return this;
  }

  off(type: "event", listener: (event: QmpEvent) => void): this {
    if (type === "event") this.#events.off(listener);
    return this;
  }

  /**
   * Resolves with the first `name` event (passing `predicate`) dispatched after this call. Arm it
   * before sending the command that triggers the event and await it afterwards; a rejection while
   * nobody awaits is not reported as unhandled. Rejects with QMP_TIMEOUT or QMP_CLOSED.
   */
  waitForEvent<N extends QmpEventName>(name: N, options: WaitForEventOptions<N>): Promise<QmpEvent<N>> {
    return this.#events.wait(name, options);
  }

  /** Closes the connection; pending calls reject with QMP_CLOSED. Idempotent; await `closed` for the fd. */
  close(): void {
    this.#shutdown(closed(`QMP client for ${this.socketPath} was closed`), false);
  }

  async #handshake(deadline: number): Promise<void> {
    const remaining = (): number => Math.max(1, deadline - Date.now());
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const hint = "QEMU serves one QMP client per socket: is another client still connected?";
        const message = `no QMP greeting on ${this.socketPath} before the connect deadline`;
        reject(qmpError("QMP_TIMEOUT", message, { hint }));
      }, remaining());
    });
    try {
      await Promise.race([this.#greeted, timeout]);
    } finally {
      clearTimeout(timer);
    }
    await this.execute("qmp_capabilities", undefined, { timeoutMs: remaining() });
    if (this.#state === "negotiating") this.#state = "ready";
  }

  #onData(chunk: Buffer): void {
    try {
      this.#decoder.push(chunk, (message) => this.#onMessage(message));
    } catch (error) {
      const reason = error instanceof HrError ? error : qmpError("QMP_PROTOCOL", messageOf(error));
      this.#shutdown(reason, false);
    }
  }

  #onMessage(message: QmpServerMessage): void {
    if (this.#state === "closed") return;
    if (this.#state === "greeting" && message.kind !== "greeting") {
      throw qmpError("QMP_PROTOCOL", `expected the QMP greeting, got a ${message.kind} message`);
    }
    switch (message.kind) {
      case "greeting":
        if (this.#state !== "greeting") throw qmpError("QMP_PROTOCOL", "QMP greeting sent twice");
        this.#greeting = message.greeting;
        this.#state = "negotiating";
        this.#settleGreeting?.resolve();
        return;
      case "event":
        return this.#events.dispatch(message.event);
      case "return":
        return this.#take(message.id)?.resolve(message.value);
      case "error": {
        const pending = this.#take(message.id);
        return pending?.reject(new QmpCommandError(pending.command, message.error));
      }
    }
  }

  /** The call waiting for `id`, removed from the table; undefined for late replies after a timeout. */
  #take(id: unknown): Pending | undefined {
    const pending = typeof id === "number" ? this.#pending.get(id) : undefined;
    if (pending === undefined) return undefined;
    this.#pending.delete(id as number);
    clearTimeout(pending.timer);
    return pending;
  }

  #shutdown(reason: HrError, byPeer: boolean): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#closeReason = reason;
    this.#socket.destroy();
    this.#settleGreeting?.reject(reason);
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer);
      if (byPeer && pending.command === "quit") pending.resolve({});
      else pending.reject(closed(`${pending.command}: QMP connection closed before the reply`, reason));
    }
    this.#pending.clear();
    this.#events.close(reason);
  }
}

function closed(message: string, cause?: unknown): HrError {
  return qmpError("QMP_CLOSED", message, { cause });
}

function peerGone(message: string, cause?: unknown): HrError {
  return qmpError("QMP_CLOSED", message, { cause, hint: "QEMU has probably exited; see its stderr or log" });
}
