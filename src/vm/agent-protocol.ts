/**
 * The guest agent's wire protocol (guest/src/hr-agent.c speaks the other end). Pure: no I/O.
 *
 * Frame, both directions, integers big-endian:
 *
 *   offset 0  be32 length   bytes that follow (type + payload), 1..FRAME_MAX
 *   offset 4  u8   type
 *   offset 5  ...  payload
 *
 *   type  direction    payload
 *   1 EXEC     host→guest  be32 id, be32 timeoutMs (0 = none), bytes command (UTF-8, run by /bin/sh -c)
 *   2 RESULT   guest→host  be32 id, be32 exitCode (signal N → 128+N, timeout → 124),
 *                          u8 flags (bit0 timedOut, bit1 stdoutTruncated, bit2 stderrTruncated),
 *                          be32 stdoutLen, stdout, be32 stderrLen, stderr
 *   3 SPAWN    host→guest  be32 id, bytes command
 *   4 SPAWNED  guest→host  be32 id, be32 pid
 *   5 PING     host→guest  be32 id
 *   6 PONG     guest→host  be32 id, bytes hostname
 *   7 ERROR    guest→host  be32 id (0 = not tied to a request), bytes message
 *
 * FRAME_MAX is 16 MiB + 64: a RESULT with two full 8 MiB captures (the agent's cap) fits.
 * Decoder states: HEADER (need 4 bytes of length) → BODY (need `length` bytes) → HEADER …; any
 * violation moves it to FAILED for good (the host side never resynchronises: reconnect). The agent
 * does: after a bad length it answers ERROR id 0 and skips input up to the next PING header
 * (00 00 00 05 05), and it drops a frame left incomplete for 10 s.
 * Versioning: there is none on the wire; a new message gets a new type number, and an old agent
 * answers an unknown type with ERROR, which callers can treat as "agent too old".
 */
import { HrError } from "../util/errors.ts";

export const FRAME_MAX = 16 * 1024 * 1024 + 64;
export const LENGTH_SIZE = 4;

export const MessageType = {
  exec: 1,
  result: 2,
  spawn: 3,
  spawned: 4,
  ping: 5,
  pong: 6,
  error: 7,
} as const;

const RESULT_FLAG_TIMED_OUT = 1;
const RESULT_FLAG_STDOUT_TRUNCATED = 2;
const RESULT_FLAG_STDERR_TRUNCATED = 4;

export interface ExecMessage {
  type: "exec";
  id: number;
  timeoutMs: number;
  command: string;
}
export interface ResultMessage {
  type: "result";
  id: number;
  exitCode: number;
  timedOut: boolean;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  stdout: Buffer;
  stderr: Buffer;
}
export interface SpawnMessage {
  type: "spawn";
  id: number;
  command: string;
}
export interface SpawnedMessage {
  type: "spawned";
  id: number;
  pid: number;
}
export interface PingMessage {
  type: "ping";
  id: number;
}
export interface PongMessage {
  type: "pong";
  id: number;
  hostname: string;
}
export interface ErrorMessage {
  type: "error";
  id: number;
  message: string;
}

export type AgentMessage =
  ExecMessage | ResultMessage | SpawnMessage | SpawnedMessage | PingMessage | PongMessage | ErrorMessage;

function protocolError(message: string): HrError {
  return new HrError("AGENT_PROTOCOL", `agent protocol: ${message}`, {
    hint: "the agent stream is out of step; close the connection and reconnect",
  });
}

function checkU32(value: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new RangeError(`${what} must be an integer in 0..2^32-1, got ${value}`);
  }
}

/* ---------- encoding ---------- */

/** A frame: length and type, then the payload pieces. The length is patched in last. */
function frame(type: number, pieces: Buffer[]): Buffer {
  const payloadSize = pieces.reduce((sum, piece) => sum + piece.length, 0);
  const length = 1 + payloadSize;
  if (length > FRAME_MAX) throw new RangeError(`frame of ${length} bytes exceeds FRAME_MAX ${FRAME_MAX}`);
  const out = Buffer.allocUnsafe(LENGTH_SIZE + length);
  out.writeUInt8(type, LENGTH_SIZE);
  let offset = LENGTH_SIZE + 1;
  for (const piece of pieces) offset += piece.copy(out, offset);
  out.writeUInt32BE(length, 0);
  return out;
}

function u32(...values: number[]): Buffer {
  const out = Buffer.allocUnsafe(4 * values.length);
  values.forEach((value, index) => out.writeUInt32BE(value, 4 * index));
  return out;
}

function encodeExec(msg: ExecMessage): Buffer {
  checkU32(msg.id, "id");
  checkU32(msg.timeoutMs, "timeoutMs");
  return frame(MessageType.exec, [u32(msg.id, msg.timeoutMs), Buffer.from(msg.command, "utf8")]);
}

function encodeResult(msg: ResultMessage): Buffer {
  checkU32(msg.id, "id");
  checkU32(msg.exitCode, "exitCode");
  const flags =
    (msg.timedOut ? RESULT_FLAG_TIMED_OUT : 0) |
    (msg.stdoutTruncated ? RESULT_FLAG_STDOUT_TRUNCATED : 0) |
    (msg.stderrTruncated ? RESULT_FLAG_STDERR_TRUNCATED : 0);
  return frame(MessageType.result, [
    u32(msg.id, msg.exitCode),
    Buffer.of(flags),
    u32(msg.stdout.length),
    msg.stdout,
    u32(msg.stderr.length),
    msg.stderr,
  ]);
}

function encodeSpawn(msg: SpawnMessage): Buffer {
  checkU32(msg.id, "id");
  return frame(MessageType.spawn, [u32(msg.id), Buffer.from(msg.command, "utf8")]);
}

function encodeSpawned(msg: SpawnedMessage): Buffer {
  checkU32(msg.id, "id");
  checkU32(msg.pid, "pid");
  return frame(MessageType.spawned, [u32(msg.id, msg.pid)]);
}

function encodePing(msg: PingMessage): Buffer {
  checkU32(msg.id, "id");
  return frame(MessageType.ping, [u32(msg.id)]);
}

function encodePong(msg: PongMessage): Buffer {
  checkU32(msg.id, "id");
  return frame(MessageType.pong, [u32(msg.id), Buffer.from(msg.hostname, "utf8")]);
}

function encodeError(msg: ErrorMessage): Buffer {
  checkU32(msg.id, "id");
  return frame(MessageType.error, [u32(msg.id), Buffer.from(msg.message, "utf8")]);
}

/** One whole frame for any message (both directions, so tests can play the guest). */
export function encodeMessage(msg: AgentMessage): Buffer {
  switch (msg.type) {
    case "exec":
      return encodeExec(msg);
    case "result":
      return encodeResult(msg);
    case "spawn":
      return encodeSpawn(msg);
    case "spawned":
      return encodeSpawned(msg);
    case "ping":
      return encodePing(msg);
    case "pong":
      return encodePong(msg);
    case "error":
      return encodeError(msg);
  }
}

/* ---------- decoding ---------- */

/** Reads fields of one frame body in order, checking every read against the body's end. */
class BodyReader {
  #offset = 0;

  constructor(
    readonly body: Buffer,
    readonly what: string,
  ) {}

  u8(): number {
    this.#need(1, "u8");
    const value = this.body.readUInt8(this.#offset);
    this.#offset += 1;
    return value;
  }

  u32(field: string): number {
    this.#need(4, field);
    const value = this.body.readUInt32BE(this.#offset);
    this.#offset += 4;
    return value;
  }

  bytes(length: number, field: string): Buffer {
    this.#need(length, field);
    const value = this.body.subarray(this.#offset, this.#offset + length);
    this.#offset += length;
    return value;
  }

  rest(): Buffer {
    const value = this.body.subarray(this.#offset);
    this.#offset = this.body.length;
    return value;
  }

  end(): void {
    if (this.#offset !== this.body.length) {
      throw protocolError(`${this.what} has ${this.body.length - this.#offset} trailing bytes`);
    }
  }

  #need(count: number, field: string): void {
    if (this.#offset + count > this.body.length) {
      throw protocolError(`${this.what} too short for ${field} (body ${this.body.length} bytes)`);
    }
  }
}

/** Parses one frame body (type byte excluded). The body buffer is owned by the caller's message. */
function parseBody(type: number, body: Buffer): AgentMessage {
  switch (type) {
    case MessageType.exec: {
      const reader = new BodyReader(body, "EXEC");
      const id = reader.u32("id");
      const timeoutMs = reader.u32("timeoutMs");
      return { type: "exec", id, timeoutMs, command: reader.rest().toString("utf8") };
    }
    case MessageType.result: {
      const reader = new BodyReader(body, "RESULT");
      const id = reader.u32("id");
      const exitCode = reader.u32("exitCode");
      const flags = reader.u8();
      const stdout = reader.bytes(reader.u32("stdoutLen"), "stdout");
      const stderr = reader.bytes(reader.u32("stderrLen"), "stderr");
      reader.end();
      return {
        type: "result",
        id,
        exitCode,
        timedOut: (flags & RESULT_FLAG_TIMED_OUT) !== 0,
        stdoutTruncated: (flags & RESULT_FLAG_STDOUT_TRUNCATED) !== 0,
        stderrTruncated: (flags & RESULT_FLAG_STDERR_TRUNCATED) !== 0,
        stdout,
        stderr,
      };
    }
    case MessageType.spawn: {
      const reader = new BodyReader(body, "SPAWN");
      const id = reader.u32("id");
      return { type: "spawn", id, command: reader.rest().toString("utf8") };
    }
    case MessageType.spawned: {
      const reader = new BodyReader(body, "SPAWNED");
      const id = reader.u32("id");
      const pid = reader.u32("pid");
      reader.end();
      return { type: "spawned", id, pid };
    }
    case MessageType.ping: {
      const reader = new BodyReader(body, "PING");
      const id = reader.u32("id");
      reader.end();
      return { type: "ping", id };
    }
    case MessageType.pong: {
      const reader = new BodyReader(body, "PONG");
      const id = reader.u32("id");
      return { type: "pong", id, hostname: reader.rest().toString("utf8") };
    }
    case MessageType.error: {
      const reader = new BodyReader(body, "ERROR");
      const id = reader.u32("id");
      return { type: "error", id, message: reader.rest().toString("utf8") };
    }
    default:
      throw protocolError(`unknown message type ${type}`);
  }
}

type DecoderState = "header" | "body" | "failed";

/**
 * Streaming decoder: feed it chunks as they arrive, in any sizes, and it returns the messages
 * completed by each chunk. Throws HrError AGENT_PROTOCOL on a bad frame, and again on every later
 * push (the stream is lost).
 */
export class AgentDecoder {
  #chunks: Buffer[] = [];
  #buffered = 0;
  #state: DecoderState = "header";
  #bodyLength = 0;
  #failure: HrError | undefined;

  /** Bytes received and not yet part of a complete message. */
  get buffered(): number {
    return this.#buffered;
  }

  push(chunk: Buffer): AgentMessage[] {
    if (this.#failure) throw this.#failure;
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    const messages: AgentMessage[] = [];
    try {
      for (;;) {
        if (this.#state === "header") {
          if (this.#buffered < LENGTH_SIZE) break;
          const length = this.#consume(LENGTH_SIZE).readUInt32BE(0);
          if (length === 0 || length > FRAME_MAX) {
            throw protocolError(`frame length ${length} outside 1..${FRAME_MAX}`);
          }
          this.#bodyLength = length;
          this.#state = "body";
        } else {
          if (this.#buffered < this.#bodyLength) break;
          const body = this.#consume(this.#bodyLength);
          this.#state = "header";
          messages.push(parseBody(body.readUInt8(0), body.subarray(1)));
        }
      }
    } catch (error) {
      this.#state = "failed";
      this.#failure = error instanceof HrError ? error : protocolError(String(error));
      this.#chunks = [];
      this.#buffered = 0;
      throw this.#failure;
    }
    return messages;
  }

  /** Takes `count` buffered bytes; copies only when they span more than one chunk. */
  #consume(count: number): Buffer {
    this.#buffered -= count;
    const head = this.#chunks[0];
    if (head === undefined) throw new Error("AgentDecoder: consume past the buffered bytes");
    if (head.length === count) {
      this.#chunks.shift();
      return head;
    }
    if (head.length > count) {
      this.#chunks[0] = head.subarray(count);
      return head.subarray(0, count);
    }
    const out = Buffer.allocUnsafe(count);
    let filled = 0;
    while (filled < count) {
      const chunk = this.#chunks[0];
      if (chunk === undefined) throw new Error("AgentDecoder: consume past the buffered bytes");
      const take = Math.min(chunk.length, count - filled);
      chunk.copy(out, filled, 0, take);
      filled += take;
      if (take === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(take);
    }
    return out;
  }
}
