import { badInput, corrupt } from "./errors.ts";
import { seal, unseal } from "./sealed.ts";

/**
 * `inflight.bin`: the Ethernet frames the switch held at the cut (the channel state), in the
 * order they are to be re-injected. Inside the envelope of sealed.ts (magic "HRIF", version 1):
 *
 *   offset  size  field
 *   0       4     frame count N, u32 LE
 *   then N times:
 *           1     length of the destination VM name, u8 (1-255)
 *           n     destination VM name, UTF-8
 *           1     length of the source VM name, u8 (0 when the sender is not a VM of the cluster)
 *           m     source VM name, UTF-8
 *           4     frame length L, u32 LE (1..MAX_FRAME_BYTES)
 *           L     the frame, from the destination MAC on
 *
 * Every length is checked against the bytes left before anything is sliced or copied.
 */

export const INFLIGHT_MAGIC = "HRIF";
export const INFLIGHT_VERSION = 1;
export const MAX_FRAME_BYTES = 1 << 20;
const MAX_NAME_BYTES = 255;

export interface InflightFrame {
  /** VM the frame is addressed to. */
  to: string;
  /** VM that sent it ("" if unknown). */
  from: string;
  data: Buffer;
}

function nameBytes(name: string, what: string, allowEmpty: boolean): Buffer {
  const bytes = Buffer.from(name, "utf8");
  if (bytes.length > MAX_NAME_BYTES || (!allowEmpty && bytes.length === 0)) {
    throw badInput(`in-flight frame: ${what} VM name must be ${allowEmpty ? 0 : 1}-255 bytes`);
  }
  return bytes;
}

export function encodeInflight(frames: readonly InflightFrame[]): Buffer {
  const parts: Buffer[] = [];
  const count = Buffer.alloc(4);
  count.writeUInt32LE(frames.length, 0);
  parts.push(count);
  for (const frame of frames) {
    if (frame.data.length === 0 || frame.data.length > MAX_FRAME_BYTES) {
      throw badInput(
        `in-flight frame to ${frame.to}: length ${frame.data.length} outside 1..${MAX_FRAME_BYTES}`,
      );
    }
    const to = nameBytes(frame.to, "destination", false);
    const from = nameBytes(frame.from, "source", true);
    const length = Buffer.alloc(4);
    length.writeUInt32LE(frame.data.length, 0);
    parts.push(Buffer.from([to.length]), to, Buffer.from([from.length]), from, length, frame.data);
  }
  return seal(INFLIGHT_MAGIC, INFLIGHT_VERSION, Buffer.concat(parts));
}

export function decodeInflight(file: string, bytes: Buffer): InflightFrame[] {
  const body = unseal(file, bytes, INFLIGHT_MAGIC, INFLIGHT_VERSION);
  const count = body.u32("frame count");
  // The smallest frame record takes 1 + 1 + 1 + 4 + 1 bytes: a bound on the count before allocating.
  if (count > body.remaining / 8) throw corrupt(file, `frame count ${count} larger than the file allows`);
  const frames: InflightFrame[] = [];
  for (let i = 0; i < count; i++) {
    const toLength = body.u8("destination name length");
    if (toLength === 0) throw corrupt(file, `frame ${i}: empty destination name`);
    const to = decodeName(file, body.bytes(toLength, "destination name"));
    const from = decodeName(file, body.bytes(body.u8("source name length"), "source name"));
    const length = body.u32("frame length");
    if (length === 0 || length > MAX_FRAME_BYTES) throw corrupt(file, `frame ${i}: bad length ${length}`);
    frames.push({ to, from, data: Buffer.from(body.bytes(length, "frame")) });
  }
  body.end();
  return frames;
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });

function decodeName(file: string, bytes: Buffer): string {
  try {
    return UTF8.decode(bytes);
  } catch (error) {
    throw corrupt(file, "VM name is not valid UTF-8", error);
  }
}
