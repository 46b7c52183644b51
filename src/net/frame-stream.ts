import { HrError } from "../util/errors.ts";
import { ByteQueue } from "../util/byte-queue.ts";

/**
 * QEMU's stream framing for `-netdev stream` (7.2+) and legacy `-netdev socket`, both directions:
 *
 *   offset  size  field
 *   0       4     length N, unsigned 32-bit big-endian
 *   4       N     one Ethernet frame: dst MAC, src MAC, ethertype, payload (no FCS, no vnet header)
 *
 * Frames follow each other back to back; a read may hold part of a frame or several frames.
 *
 * Decoder state machine:
 *
 *   LENGTH --(4 bytes buffered; N <= MAX_FRAME_LENGTH)--> FRAME --(N bytes buffered)--> LENGTH
 *   LENGTH --(N > MAX_FRAME_LENGTH)--> FAILED (throws FRAME_TOO_LARGE; every later decode throws)
 *
 * The limit is QEMU's own receive buffer (NET_BUFSIZE = 4096 + 65536): QEMU never sends more,
 * so a larger length means a broken or hostile peer, and its port should be disconnected.
 * Versioning: the framing has no version field; QEMU has kept it unchanged since `-netdev socket`.
 */
export const LENGTH_OFFSET = 0;
export const LENGTH_SIZE = 4;
export const FRAME_OFFSET = LENGTH_OFFSET + LENGTH_SIZE;
export const MAX_FRAME_LENGTH = 4096 + 65536;

export type FrameErrorCode = "FRAME_TOO_LARGE" | "FRAME_DECODER_FAILED";

type DecoderState = "LENGTH" | "FRAME" | "FAILED";

export class FrameDecoder {
  readonly #queue = new ByteQueue();
  readonly #maxFrameLength: number;
  #state: DecoderState = "LENGTH";
  #frameLength = 0;

  constructor(options: { maxFrameLength?: number } = {}) {
    this.#maxFrameLength = options.maxFrameLength ?? MAX_FRAME_LENGTH;
  }

  /** Bytes received and not yet returned as a frame. */
  get buffered(): number {
    return this.#queue.length;
  }

  /**
   * Feeds received bytes and calls `onFrame` for every frame they complete, in order, as soon as
   * each is complete. Throws HrError FRAME_TOO_LARGE on an oversized length (frames before it in
   * the same chunk have been handed out already); the decoder is then FAILED and refuses more
   * input with FRAME_DECODER_FAILED. Frames may share memory with the pushed chunks.
   */
  decode(chunk: Buffer, onFrame: (frame: Buffer) => void): void {
    if (this.#state === "FAILED") {
      throw new HrError("FRAME_DECODER_FAILED", "frame decoder already failed on a protocol error");
    }
    this.#queue.push(chunk);
    for (;;) {
      if (this.#state === "LENGTH") {
        if (this.#queue.length < LENGTH_SIZE) return;
        const length = this.#queue.consume(LENGTH_SIZE).readUInt32BE(0);
        if (length > this.#maxFrameLength) {
          this.#state = "FAILED";
          this.#queue.clear();
          throw new HrError(
            "FRAME_TOO_LARGE",
            `peer announced a ${length}-byte frame, above the ${this.#maxFrameLength}-byte limit`,
            { hint: "the peer does not speak QEMU's length-prefixed stream framing" },
          );
        }
        this.#frameLength = length;
        this.#state = "FRAME";
      } else {
        if (this.#queue.length < this.#frameLength) return;
        const frame = this.#queue.consume(this.#frameLength);
        this.#state = "LENGTH";
        onFrame(frame);
      }
    }
  }

  /** `decode`, collecting the frames into an array. */
  push(chunk: Buffer): Buffer[] {
    const frames: Buffer[] = [];
    this.decode(chunk, (frame) => frames.push(frame));
    return frames;
  }
}

/** One frame in QEMU's stream framing: the be32 length, then the frame. */
export function encodeFrame(frame: Buffer): Buffer {
  if (frame.length > MAX_FRAME_LENGTH) {
    throw new HrError("FRAME_TOO_LARGE", `cannot send a ${frame.length}-byte frame`, {
      hint: `frames on a QEMU stream are at most ${MAX_FRAME_LENGTH} bytes`,
    });
  }
  const out = Buffer.allocUnsafe(FRAME_OFFSET + frame.length);
  out.writeUInt32BE(frame.length, LENGTH_OFFSET);
  frame.copy(out, FRAME_OFFSET);
  return out;
}

/** Several frames back to back, as one buffer (tests, batch injection). */
export function encodeFrames(frames: readonly Buffer[]): Buffer {
  return Buffer.concat(frames.map(encodeFrame));
}
