/**
 * The return path of a post-copy migration: messages the destination QEMU sends back to its
 * source on the same socket (QEMU 7.2 migration.c, source_return_path_thread):
 *
 *   offset 0  be16 type
 *   offset 2  be16 len
 *   offset 4  data[len]
 *
 *   type            len       data
 *   1 SHUT          4         be32 error (0 = the destination finished fine)
 *   2 PONG          4         be32 value of the PING it answers
 *   3 REQ_PAGES_ID  13 + n    be64 start, be32 length, u8 n, block idstr[n]
 *   4 REQ_PAGES     12        be64 start, be32 length (block: that of the last REQ_PAGES_ID)
 *   5 RECV_BITMAP   1 + n     postcopy recovery; unframed bitmap bytes follow: refused
 *   6 RESUME_ACK    4         be32
 *
 * Decoder states: HEADER (need 4 bytes) → BODY (need len bytes) → HEADER …; any violation moves
 * it to FAILED for good (rethrown by later pushes). Errors: HrError MIGRATION_BAD_STREAM or
 * MIGRATION_UNSUPPORTED.
 */
import { HrError, messageOf } from "../util/errors.ts";
import { ByteQueue } from "../util/byte-queue.ts";
import { shortString } from "./configuration.ts";
import { badStream, unsupported } from "./errors.ts";
import { u64 } from "./encode.ts";
import { RP_HEADER_SIZE, RP_REQ_PAGES_SIZE, ReturnPath } from "./format.ts";

export type ReturnPathMessage =
  | { type: "shut"; error: number }
  | { type: "pong"; value: number }
  /** `withId`: it came as REQ_PAGES_ID (else REQ_PAGES, block filled in from the last one). */
  | { type: "reqPages"; block: string; start: number; length: number; withId: boolean }
  | { type: "resumeAck"; value: number };

const TYPE_OFFSET = 0;
const LEN_OFFSET = 2;
const START_OFFSET = 0;
const LENGTH_OFFSET = 8;
const ID_LEN_OFFSET = 12;
const ID_OFFSET = 13;

export class ReturnPathDecoder {
  readonly #queue = new ByteQueue();
  #state: "header" | "body" | "failed" = "header";
  #type = 0;
  #length = 0;
  #lastBlock: string | undefined;
  #error: HrError | undefined;

  get buffered(): number {
    return this.#queue.length;
  }

  push(chunk: Buffer): ReturnPathMessage[] {
    if (this.#error) throw this.#error;
    try {
      this.#queue.push(chunk);
      const out: ReturnPathMessage[] = [];
      for (;;) {
        if (this.#state === "header") {
          if (this.#queue.length < RP_HEADER_SIZE) break;
          this.#readHeader();
        } else {
          if (this.#queue.length < this.#length) break;
          const at = this.#queue.consumed;
          out.push(this.#decodeBody(this.#queue.consume(this.#length), at));
          this.#state = "header";
        }
      }
      return out;
    } catch (error) {
      this.#state = "failed";
      this.#queue.clear();
      this.#error = error instanceof HrError ? error : badStream(this.#queue.consumed, messageOf(error));
      throw this.#error;
    }
  }

  #readHeader(): void {
    const at = this.#queue.consumed;
    const header = this.#queue.consume(RP_HEADER_SIZE);
    const type = header.readUInt16BE(TYPE_OFFSET);
    const length = header.readUInt16BE(LEN_OFFSET);
    const fixed = fixedLength(type);
    if (type === ReturnPath.RECV_BITMAP) {
      throw unsupported(at, "return-path RECV_BITMAP (postcopy recovery)", "do not use migrate-recover");
    }
    if (fixed === undefined) throw badStream(at, `unknown return-path message type ${type}`);
    if (fixed >= 0 ? length !== fixed : length < ID_OFFSET + 1) {
      throw badStream(at, `return-path message type ${type} with length ${length}`);
    }
    this.#type = type;
    this.#length = length;
    this.#state = "body";
  }

  #decodeBody(data: Buffer, at: number): ReturnPathMessage {
    switch (this.#type) {
      case ReturnPath.SHUT:
        return { type: "shut", error: data.readUInt32BE(0) };
      case ReturnPath.PONG:
        return { type: "pong", value: data.readUInt32BE(0) };
      case ReturnPath.RESUME_ACK:
        return { type: "resumeAck", value: data.readUInt32BE(0) };
      case ReturnPath.REQ_PAGES_ID: {
        const idLength = data[ID_LEN_OFFSET]!;
        if (data.length !== ID_OFFSET + idLength) {
          throw badStream(
            at,
            `REQ_PAGES_ID length ${data.length} does not match its idstr (${idLength} bytes)`,
          );
        }
        this.#lastBlock = data.toString("latin1", ID_OFFSET);
        return this.#request(data, this.#lastBlock, true, at);
      }
      default: {
        if (this.#lastBlock === undefined) throw badStream(at, "REQ_PAGES before any REQ_PAGES_ID");
        return this.#request(data, this.#lastBlock, false, at);
      }
    }
  }

  #request(data: Buffer, block: string, withId: boolean, at: number): ReturnPathMessage {
    const start = data.readBigUInt64BE(START_OFFSET);
    if (start > BigInt(Number.MAX_SAFE_INTEGER)) throw badStream(at, "page request start too large");
    return {
      type: "reqPages",
      block,
      start: Number(start),
      length: data.readUInt32BE(LENGTH_OFFSET),
      withId,
    };
  }
}

/** -1: variable (REQ_PAGES_ID); undefined: unknown type. */
function fixedLength(type: number): number | undefined {
  switch (type) {
    case ReturnPath.SHUT:
    case ReturnPath.PONG:
    case ReturnPath.RESUME_ACK:
      return 4;
    case ReturnPath.REQ_PAGES:
      return RP_REQ_PAGES_SIZE;
    case ReturnPath.REQ_PAGES_ID:
    case ReturnPath.RECV_BITMAP:
      return -1;
    default:
      return undefined;
  }
}

/** What a destination would send (for tests and fake destinations). */
export function encodeReturnPathMessage(message: ReturnPathMessage): Buffer {
  let type: number;
  let data: Buffer;
  const u32 = (value: number): Buffer => {
    const out = Buffer.alloc(4);
    out.writeUInt32BE(value >>> 0, 0);
    return out;
  };
  switch (message.type) {
    case "shut":
      [type, data] = [ReturnPath.SHUT, u32(message.error)];
      break;
    case "pong":
      [type, data] = [ReturnPath.PONG, u32(message.value)];
      break;
    case "resumeAck":
      [type, data] = [ReturnPath.RESUME_ACK, u32(message.value)];
      break;
    case "reqPages": {
      const range = Buffer.concat([u64(message.start), u32(message.length)]);
      type = message.withId ? ReturnPath.REQ_PAGES_ID : ReturnPath.REQ_PAGES;
      data = message.withId ? Buffer.concat([range, shortString(message.block)]) : range;
      break;
    }
  }
  const header = Buffer.alloc(RP_HEADER_SIZE);
  header.writeUInt16BE(type, TYPE_OFFSET);
  header.writeUInt16BE(data.length, LEN_OFFSET);
  return Buffer.concat([header, data]);
}
