/**
 * QMP wire framing, as QEMU 7.2 speaks it.
 *
 * Layout: UTF-8 text, one JSON object per line, each line ended by "\r\n".
 *   {"QMP": {"version": {...}, "capabilities": ["oob"]}}\r\n        greeting, once, on connect
 *   {"return": {...}, "id": 1}\r\n                                   success reply
 *   {"id": 2, "error": {"class": "GenericError", "desc": "..."}}\r\n   failed reply
 *   {"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}\r\n
 * The client writes commands the same way (QEMU reads with a streaming JSON parser, so the line end
 * is cosmetic in that direction). A bare "\n" is accepted as a line end too; blank lines are skipped.
 *
 * Line decoder states:
 *   SCANNING --LF--> emit the line (minus one trailing CR) --> SCANNING
 *   SCANNING --line longer than maxLineBytes--> FAILED (terminal: every later push throws again)
 * The unfinished line is kept as a list of chunks with a byte count; bytes are copied only when a
 * line crosses chunks. Cutting at LF and then dropping a trailing CR means a CRLF split across chunks
 * needs no extra state, and decoding to text only once the whole line is in hand means a multi-byte
 * character split across chunks decodes correctly. Invalid UTF-8 becomes U+FFFD (QEMU itself replaces
 * bad sequences when it writes JSON, so this only guards against garbage).
 *
 * Versioning: the framing has no version of its own; the greeting's `version` identifies QEMU.
 */
import { type HrError, messageOf } from "../util/errors.ts";
import { qmpError } from "./errors.ts";
import type { QmpCommandMessage, QmpGreeting, QmpServerMessage } from "./types.ts";

export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
const LF = 0x0a;
const CR = 0x0d;

export class LineDecoder {
  #state: "scanning" | "failed" = "scanning";
  #failure: HrError | undefined;
  #chunks: Buffer[] = [];
  #buffered = 0;
  readonly #maxLineBytes: number;

  constructor(maxLineBytes: number = MAX_MESSAGE_BYTES) {
    this.#maxLineBytes = maxLineBytes;
  }

  get state(): "scanning" | "failed" {
    return this.#state;
  }

  /** Bytes held for a line whose end has not arrived yet. */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  /**
   * Feeds one chunk; calls `onLine` for every line it completes, in order. Throws a QMP_PROTOCOL
   * HrError once a line exceeds the limit (after delivering the lines before it). If `onLine`
   * throws, the rest of the chunk is dropped: treat that as fatal for the stream.
   */
  push(chunk: Uint8Array, onLine: (line: string) => void): void {
    if (this.#failure !== undefined) throw this.#failure;
    const bytes = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    let start = 0;
    while (start < bytes.length) {
      const lf = bytes.indexOf(LF, start);
      if (lf === -1) {
        this.#keep(bytes.subarray(start));
        return;
      }
      const line = this.#takeLine(bytes.subarray(start, lf));
      start = lf + 1;
      onLine(line);
    }
  }

  #keep(part: Buffer): void {
    this.#chunks.push(part);
    this.#buffered += part.length;
    // One byte of slack: the CR of a line of exactly maxLineBytes may be held while LF is in flight.
    if (this.#buffered > this.#maxLineBytes + 1) this.#fail(this.#buffered);
  }

  #takeLine(tail: Buffer): string {
    const total = this.#buffered + tail.length;
    if (total > this.#maxLineBytes + 1) this.#fail(total);
    let line = tail;
    if (this.#buffered > 0) {
      this.#chunks.push(tail);
      line = Buffer.concat(this.#chunks, total);
      this.#chunks = [];
      this.#buffered = 0;
    }
    if (line.length > 0 && line[line.length - 1] === CR) line = line.subarray(0, line.length - 1);
    if (line.length > this.#maxLineBytes) this.#fail(line.length);
    return line.toString("utf8");
  }

  #fail(size: number): never {
    this.#state = "failed";
    this.#chunks = [];
    this.#buffered = 0;
    this.#failure = qmpError(
      "QMP_PROTOCOL",
      `QMP message of ${size}+ bytes exceeds the ${this.#maxLineBytes}-byte limit`,
      { hint: "the peer is not a QMP server, or raise maxMessageBytes" },
    );
    throw this.#failure;
  }
}

/** Line decoder plus envelope parsing: bytes in, typed server messages out. Fails for good on error. */
export class QmpDecoder {
  readonly #lines: LineDecoder;
  #failure: Error | undefined;

  constructor(maxMessageBytes: number = MAX_MESSAGE_BYTES) {
    this.#lines = new LineDecoder(maxMessageBytes);
  }

  push(chunk: Uint8Array, onMessage: (message: QmpServerMessage) => void): void {
    if (this.#failure !== undefined) throw this.#failure;
    try {
      this.#lines.push(chunk, (line) => {
        if (line.trim() !== "") onMessage(parseServerMessage(line));
      });
    } catch (error) {
      this.#failure = error instanceof Error ? error : new Error(String(error));
      throw this.#failure;
    }
  }
}

/** Parses one line into a tagged message; anything that is not a QMP envelope is QMP_PROTOCOL. */
export function parseServerMessage(line: string): QmpServerMessage {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (error) {
    throw protocolError(`QMP sent invalid JSON: ${preview(line)}`, error);
  }
  if (!isRecord(value)) throw protocolError(`QMP sent a non-object: ${preview(line)}`);
  if ("QMP" in value) return { kind: "greeting", greeting: checkGreeting(value, line) };
  if (typeof value.event === "string") {
    const ts = value.timestamp;
    if (!isRecord(ts) || typeof ts.seconds !== "number" || typeof ts.microseconds !== "number") {
      throw protocolError(`QMP event without timestamp: ${preview(line)}`);
    }
    const data = isRecord(value.data) ? value.data : undefined;
    const timestamp = { seconds: ts.seconds, microseconds: ts.microseconds };
    return { kind: "event", event: { event: value.event, data, timestamp } };
  }
  if ("error" in value) {
    const error = value.error;
    if (!isRecord(error) || typeof error.class !== "string" || typeof error.desc !== "string") {
      throw protocolError(`QMP error reply without class/desc: ${preview(line)}`);
    }
    return { kind: "error", id: value.id, error: { class: error.class, desc: error.desc } };
  }
  if ("return" in value) return { kind: "return", id: value.id, value: value.return };
  throw protocolError(`QMP sent an unknown message: ${preview(line)}`);
}

function checkGreeting(value: Record<string, unknown>, line: string): QmpGreeting {
  const qmp = value.QMP;
  if (
    isRecord(qmp) &&
    isRecord(qmp.version) &&
    isRecord(qmp.version.qemu) &&
    Array.isArray(qmp.capabilities)
  ) {
    const { major, minor, micro } = qmp.version.qemu;
    const numeric = typeof major === "number" && typeof minor === "number" && typeof micro === "number";
    if (numeric) return value as unknown as QmpGreeting;
  }
  throw protocolError(`QMP greeting without version/capabilities: ${preview(line)}`);
}

/** Writes any JSON object as one QMP line. Throws QMP_ENCODE for values JSON cannot hold. */
export function encodeMessage(message: object): Buffer {
  let text: string;
  try {
    text = JSON.stringify(message);
  } catch (error) {
    throw qmpError("QMP_ENCODE", `cannot encode QMP message: ${messageOf(error)}`, { cause: error });
  }
  return Buffer.from(`${text}\r\n`, "utf8");
}

export function encodeCommand(command: QmpCommandMessage): Buffer {
  return encodeMessage(command);
}

function protocolError(message: string, cause?: unknown): HrError {
  return qmpError("QMP_PROTOCOL", message, {
    cause,
    hint: "check that the socket belongs to a QEMU QMP monitor (-qmp), not a HMP or serial chardev",
  });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function preview(line: string): string {
  return line.length > 120 ? `${JSON.stringify(line.slice(0, 120))}…` : JSON.stringify(line);
}
