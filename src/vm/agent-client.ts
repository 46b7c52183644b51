/**
 * Host side of the guest agent: a client on the unix socket of QEMU's agent chardev.
 *
 * QEMU is the server and the guest port is a virtio-serial port named org.hotrestore.agent:
 *   -chardev socket,id=agent0,path=SOCK,server=on,wait=off
 *   -device virtio-serial-pci
 *   -device virtserialport,chardev=agent0,name=org.hotrestore.agent
 * QEMU accepts one client at a time. Bytes written before the guest has opened the port stay
 * queued (QEMU stops reading the socket), so the first PINGs of waitReady() are answered in a
 * burst once the agent runs: replies whose id is no longer pending are ignored.
 * Requests are correlated by id. Every pending call rejects with AGENT_CLOSED when the socket
 * closes, AGENT_TIMEOUT when its host-side timer fires (command timeout + margin), AGENT_PROTOCOL
 * when the stream is garbled or the agent reports a framing error (ERROR id 0; the client then
 * closes itself), AGENT_ERROR when the agent refuses one request.
 * After AGENT_PROTOCOL: connect again and call waitReady(). The guest cannot always tell that the
 * host reconnected (a quick close + open can fall between two of its looks), so after a framing
 * error it skips input up to the next PING header: waitReady()'s PINGs bring it back in step.
 */
import type { Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { HrError, messageOf } from "../util/errors.ts";
import { AgentDecoder, encodeMessage, type AgentMessage } from "./agent-protocol.ts";
import { connectUnix } from "../util/unix-socket.ts";

export type AgentErrorCode =
  "AGENT_CONNECT" | "AGENT_CLOSED" | "AGENT_TIMEOUT" | "AGENT_PROTOCOL" | "AGENT_ERROR";

export interface ExecResult {
  exitCode: number;
  stdout: Buffer;
  stderr: Buffer;
  timedOut: boolean;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  /** Host-side time from request to reply. */
  durationMs: number;
}

export interface ExecOptions {
  /** Guest-side timeout: the command's process group is killed and exitCode is 124. 0 = none. */
  timeoutMs?: number;
  /** Extra host-side wait beyond timeoutMs before AGENT_TIMEOUT (the guest may be slow under TCG). */
  marginMs?: number;
}

const DEFAULT_EXEC_TIMEOUT_MS = 30_000;
const DEFAULT_MARGIN_MS = 10_000;
const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
const READY_PING_INTERVAL_MS = 500;
const CONNECT_RETRY_MS = 50;

type ReplyType = "result" | "spawned" | "pong";

interface Pending {
  expect: ReplyType;
  /** Receives the reply; an ERROR reply arrives here too. */
  settle(reply: AgentMessage): void;
  fail(error: HrError): void;
}

export class AgentClient {
  readonly path: string;
  readonly #socket: Socket;
  readonly #decoder = new AgentDecoder();
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #closedError: HrError | undefined;
  /** Resolves (never rejects) once the socket has closed. */
  readonly closed: Promise<void>;

  private constructor(path: string, socket: Socket) {
    this.path = path;
    this.#socket = socket;
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("error", (error) => {
      this.#shutdown(new HrError("AGENT_CLOSED", `agent socket ${path}: ${error.message}`, { cause: error }));
    });
    socket.on("close", () => {
      this.#shutdown(new HrError("AGENT_CLOSED", `agent socket ${path} closed`));
    });
  }

  /**
   * Connects to the agent socket, retrying while QEMU has not created it yet (ENOENT,
   * ECONNREFUSED) until timeoutMs. Does not wait for the guest: see waitReady().
   */
  static async connect(path: string, options: { timeoutMs?: number } = {}): Promise<AgentClient> {
    const deadline = Date.now() + (options.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS);
    for (;;) {
      try {
        const socket = await connectUnix(path);
        return new AgentClient(path, socket);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        const retriable = code === "ENOENT" || code === "ECONNREFUSED" || code === "EAGAIN";
        if (!retriable || Date.now() + CONNECT_RETRY_MS > deadline) {
          throw new HrError("AGENT_CONNECT", `cannot connect to agent socket ${path}: ${messageOf(error)}`, {
            cause: error,
            hint: "is the VM's QEMU running with the agent chardev (-chardev socket,...,server=on)?",
          });
        }
        await sleep(CONNECT_RETRY_MS);
      }
    }
  }

  get isClosed(): boolean {
    return this.#closedError !== undefined;
  }

  /** One PING; resolves with the guest's hostname. */
  async ping(timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS): Promise<string> {
    const reply = await this.#request("pong", (id) => ({ type: "ping", id }), timeoutMs, "ping");
    return reply.hostname;
  }

  /**
   * Waits until the agent answers: a PING every 500 ms (the early ones wait in QEMU until the
   * guest opens its port) until the first PONG. Resolves with the guest's hostname.
   */
  async waitReady(timeoutMs: number): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    const ids: number[] = [];
    let answered: ((hostname: string) => void) | undefined;
    let failed: ((error: HrError) => void) | undefined;
    const outcome = new Promise<string>((resolve, reject) => {
      answered = resolve;
      failed = reject;
    });
    const pending: Pending = {
      expect: "pong",
      settle: (reply) => {
        if (reply.type === "pong") answered?.(reply.hostname);
        else failed?.(replyError(reply, "ping"));
      },
      fail: (error) => failed?.(error),
    };
    const sendPing = (): void => {
      if (this.#closedError) return;
      const id = this.#allocateId();
      ids.push(id);
      this.#pending.set(id, pending);
      this.#write({ type: "ping", id });
    };
    let interval: NodeJS.Timeout | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      if (this.#closedError) throw this.#closedError;
      sendPing();
      interval = setInterval(sendPing, READY_PING_INTERVAL_MS);
      timer = setTimeout(
        () => {
          failed?.(
            new HrError("AGENT_TIMEOUT", `agent on ${this.path} not ready after ${timeoutMs} ms`, {
              hint: "check the guest console log: did it boot, and is the virtserialport device present?",
            }),
          );
        },
        Math.max(0, deadline - Date.now()),
      );
      return await outcome;
    } finally {
      clearInterval(interval);
      clearTimeout(timer);
      for (const id of ids) this.#pending.delete(id);
    }
  }

  /** Runs `/bin/sh -c command` in the guest and waits for its exit. */
  async exec(command: string, options: ExecOptions = {}): Promise<ExecResult> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
    const hostTimeoutMs = timeoutMs === 0 ? 0 : timeoutMs + (options.marginMs ?? DEFAULT_MARGIN_MS);
    const started = Date.now();
    const reply = await this.#request(
      "result",
      (id) => ({ type: "exec", id, timeoutMs, command }),
      hostTimeoutMs,
      `exec ${JSON.stringify(truncate(command))}`,
    );
    return {
      exitCode: reply.exitCode,
      stdout: reply.stdout,
      stderr: reply.stderr,
      timedOut: reply.timedOut,
      stdoutTruncated: reply.stdoutTruncated,
      stderrTruncated: reply.stderrTruncated,
      durationMs: Date.now() - started,
    };
  }

  /** Starts `/bin/sh -c command` detached in the guest (setsid, stdio on /dev/null); resolves its pid. */
  async spawn(command: string, options: { timeoutMs?: number } = {}): Promise<number> {
    const reply = await this.#request(
      "spawned",
      (id) => ({ type: "spawn", id, command }),
      options.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
      `spawn ${JSON.stringify(truncate(command))}`,
    );
    return reply.pid;
  }

  /** Closes the connection; pending calls reject with AGENT_CLOSED. */
  async close(): Promise<void> {
    this.#shutdown(new HrError("AGENT_CLOSED", `agent connection ${this.path} closed by the host`));
    this.#socket.destroy();
    await this.closed;
  }

  #allocateId(): number {
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xffffffff ? 1 : this.#nextId + 1;
    return id;
  }

  #write(message: AgentMessage): void {
    this.#socket.write(encodeMessage(message));
  }

  #request<T extends ReplyType>(
    expect: T,
    build: (id: number) => AgentMessage,
    timeoutMs: number,
    what: string,
  ): Promise<Extract<AgentMessage, { type: T }>> {
    return new Promise((resolve, reject) => {
      if (this.#closedError) {
        reject(this.#closedError);
        return;
      }
      const id = this.#allocateId();
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        clearTimeout(timer);
        this.#pending.delete(id);
      };
      this.#pending.set(id, {
        expect,
        settle: (reply) => {
          done();
          if (reply.type === expect) resolve(reply as Extract<AgentMessage, { type: T }>);
          else reject(replyError(reply, what));
        },
        fail: (error) => {
          done();
          reject(error);
        },
      });
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          done();
          reject(
            new HrError("AGENT_TIMEOUT", `agent ${this.path}: no reply to ${what} within ${timeoutMs} ms`, {
              hint: "the guest may be hung or overloaded; check its console log",
            }),
          );
        }, timeoutMs);
      }
      this.#write(build(id));
    });
  }

  #onData(chunk: Buffer): void {
    let messages: AgentMessage[];
    try {
      messages = this.#decoder.push(chunk);
    } catch (error) {
      const failure =
        error instanceof HrError ? error : new HrError("AGENT_PROTOCOL", messageOf(error), { cause: error });
      this.#shutdown(failure);
      this.#socket.destroy();
      return;
    }
    for (const message of messages) this.#dispatch(message);
  }

  #dispatch(message: AgentMessage): void {
    if (message.type === "error" && message.id === 0) {
      // The agent lost the frame boundaries of what we sent: this connection is unusable.
      this.#shutdown(new HrError("AGENT_PROTOCOL", `agent ${this.path} reported: ${message.message}`));
      this.#socket.destroy();
      return;
    }
    const pending = this.#pending.get(message.id);
    if (pending === undefined) return; // stale: an earlier ready-ping, or a call that timed out
    if (message.type !== pending.expect && message.type !== "error") return;
    pending.settle(message);
  }

  #shutdown(error: HrError): void {
    if (this.#closedError) return;
    this.#closedError = error;
    const pending = [...new Set(this.#pending.values())];
    this.#pending.clear();
    for (const entry of pending) entry.fail(error);
  }
}

function replyError(reply: AgentMessage, what: string): HrError {
  if (reply.type === "error") return new HrError("AGENT_ERROR", `agent refused ${what}: ${reply.message}`);
  return new HrError("AGENT_PROTOCOL", `agent answered ${what} with ${reply.type}`);
}

function truncate(text: string, max = 60): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}
