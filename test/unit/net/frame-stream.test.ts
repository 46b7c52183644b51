import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ByteQueue } from "../../../src/util/byte-queue.ts";
import { encodeFrame, encodeFrames, FrameDecoder, MAX_FRAME_LENGTH } from "../../../src/net/frame-stream.ts";
import { isHrError } from "../../../src/util/errors.ts";

function frameOf(length: number, seed: number): Buffer {
  const frame = Buffer.alloc(length);
  for (let i = 0; i < length; i++) frame[i] = (seed + i * 7) & 0xff;
  return frame;
}

const FRAMES = [frameOf(60, 1), frameOf(0, 2), frameOf(1, 3), frameOf(1514, 4), frameOf(42, 5)];
const STREAM = encodeFrames(FRAMES);

describe("ByteQueue", () => {
  it("consumes within one chunk without copying and across chunks by copying", () => {
    const queue = new ByteQueue();
    const first = Buffer.from([1, 2, 3]);
    queue.push(first);
    queue.push(Buffer.from([4, 5]));
    const head = queue.consume(2);
    assert.deepEqual([...head], [1, 2]);
    assert.equal(head.buffer, first.buffer);
    assert.deepEqual([...queue.consume(3)], [3, 4, 5]);
    assert.equal(queue.length, 0);
    assert.throws(() => queue.consume(1), RangeError);
  });

  // Found while fuzzing the parsers (issue 7): consume() shifted the chunk list once per chunk, so a
  // record that arrived in many small chunks (a 256 KiB pcap record byte by byte: a minute) took
  // time quadratic in their number, in every decoder built on ByteQueue.
  it("consumes a record that arrived in 100,000 one-byte chunks in linear time", () => {
    const queue = new ByteQueue();
    const bytes = frameOf(100_000, 9);
    for (let at = 0; at < bytes.length; at++) queue.push(bytes.subarray(at, at + 1));
    queue.push(Buffer.from([1, 2]));
    const started = performance.now();
    assert.ok(queue.consume(bytes.length).equals(bytes));
    assert.ok(performance.now() - started < 5_000, "took longer than 5 s");
    assert.deepEqual([...queue.consume(2)], [1, 2]);
  });

  it("compacts its first bytes into one chunk without changing what it holds", () => {
    const queue = new ByteQueue();
    queue.push(Buffer.from([1, 2]));
    queue.consume(1);
    queue.push(Buffer.from([3]));
    const last = Buffer.alloc(3); // not from the pool, so its .buffer is its own
    last.set([4, 5, 6]);
    queue.push(last);
    queue.compact(3);
    assert.equal(queue.consumed, 1);
    assert.equal(queue.length, 5);
    const head = queue.consume(3);
    assert.deepEqual([...head], [2, 3, 4]);
    assert.notEqual(head.buffer, last.buffer, "the first 3 bytes are one copied chunk");
    const tail = queue.consume(2);
    assert.deepEqual([...tail], [5, 6]);
    assert.equal(tail.buffer, last.buffer, "bytes past the window are not copied");
    queue.push(Buffer.from([7]));
    queue.push(Buffer.from([8]));
    queue.compact();
    assert.deepEqual([...queue.consumeAll()], [7, 8]);
  });
});

describe("FrameDecoder", () => {
  it("decodes the reference capture from the QEMU notes (be32 length, then the frame)", () => {
    const bytes = Buffer.from("0000005a33330000001652540077000186dd", "hex");
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(bytes), []);
    const frames = decoder.push(Buffer.alloc(90 - 14));
    assert.equal(frames.length, 1);
    assert.equal(frames[0]?.subarray(0, 14).toString("hex"), "33330000001652540077000186dd");
  });

  it("decodes a stream pushed in one piece", () => {
    assert.deepEqual(new FrameDecoder().push(STREAM), FRAMES);
  });

  it("decodes the same frames whatever byte boundary the stream is split at", () => {
    for (let split = 0; split <= STREAM.length; split++) {
      const decoder = new FrameDecoder();
      const frames = [...decoder.push(STREAM.subarray(0, split)), ...decoder.push(STREAM.subarray(split))];
      assert.deepEqual(frames, FRAMES, `split at ${split}`);
      assert.equal(decoder.buffered, 0);
    }
  });

  it("decodes the stream fed one byte at a time", () => {
    const decoder = new FrameDecoder();
    const frames: Buffer[] = [];
    for (const byte of STREAM) frames.push(...decoder.push(Buffer.from([byte])));
    assert.deepEqual(frames, FRAMES);
  });

  it("accepts a frame of exactly the limit and rejects one byte more", () => {
    const decoder = new FrameDecoder();
    const max = frameOf(MAX_FRAME_LENGTH, 9);
    assert.deepEqual(decoder.push(encodeFrame(max)), [max]);
    const header = Buffer.alloc(4);
    header.writeUInt32BE(MAX_FRAME_LENGTH + 1);
    assert.throws(
      () => decoder.push(header),
      (error) => isHrError(error, "FRAME_TOO_LARGE"),
    );
    assert.throws(
      () => decoder.push(encodeFrame(frameOf(60, 0))),
      (error) => isHrError(error, "FRAME_DECODER_FAILED"),
    );
  });

  it("hands out the frames before an oversized length, then throws", () => {
    const bad = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    const seen: Buffer[] = [];
    const decoder = new FrameDecoder();
    assert.throws(
      () => decoder.decode(Buffer.concat([encodeFrame(frameOf(60, 1)), bad]), (frame) => seen.push(frame)),
      (error) => isHrError(error, "FRAME_TOO_LARGE"),
    );
    assert.equal(seen.length, 1);
  });

  it("rejects an oversized length at every split of the length field", () => {
    const stream = Buffer.concat([encodeFrame(frameOf(20, 1)), Buffer.from([0x00, 0x02, 0x00, 0x00])]);
    for (let split = 0; split <= stream.length; split++) {
      const decoder = new FrameDecoder();
      assert.throws(
        () => {
          decoder.push(stream.subarray(0, split));
          decoder.push(stream.subarray(split));
        },
        (error) => isHrError(error, "FRAME_TOO_LARGE"),
      );
    }
  });

  it("refuses to encode an oversized frame", () => {
    assert.throws(
      () => encodeFrame(Buffer.alloc(MAX_FRAME_LENGTH + 1)),
      (error) => isHrError(error, "FRAME_TOO_LARGE"),
    );
  });
});
