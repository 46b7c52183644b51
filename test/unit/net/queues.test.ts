import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { HoldQueue } from "../../../src/net/hold-queue.ts";
import { FLOODED, TrafficLog } from "../../../src/net/traffic-log.ts";

describe("HoldQueue", () => {
  it("keeps frames in order and drops the oldest beyond its byte bound", () => {
    const queue = new HoldQueue(250);
    for (let i = 0; i < 5; i++) queue.push(Buffer.alloc(100, i));
    assert.equal(queue.frames, 2);
    assert.equal(queue.bytes, 200);
    assert.equal(queue.dropped, 3);
    assert.equal(queue.droppedBytes, 300);
    assert.deepEqual(
      queue.peek().map((frame) => frame[0]),
      [3, 4],
    );
    queue.push(Buffer.alloc(300));
    assert.equal(queue.dropped, 4);
    assert.deepEqual(
      queue.drain().map((frame) => frame[0]),
      [3, 4],
    );
    assert.equal(queue.frames, 0);
    assert.equal(queue.bytes, 0);
  });

  it("copies frames so the caller's buffer may be reused", () => {
    const queue = new HoldQueue(1000);
    const frame = Buffer.from([1, 2, 3]);
    queue.push(frame);
    frame[0] = 9;
    assert.deepEqual([...(queue.peek()[0] ?? [])], [1, 2, 3]);
  });

  it("stays correct through many pushes and drops (compaction)", () => {
    const queue = new HoldQueue(10 * 4);
    for (let i = 0; i < 5000; i++) queue.push(Buffer.from([i & 0xff, 0, 0, 0]));
    assert.equal(queue.frames, 10);
    assert.equal(queue.peek()[0]?.[0], (5000 - 10) & 0xff);
  });
});

describe("TrafficLog", () => {
  it("keeps at most maxEntries, oldest first", () => {
    const log = new TrafficLog({ maxEntries: 3, maxAgeMs: 1e9 });
    for (let t = 0; t < 5; t++) log.push({ t, from: "a", to: FLOODED, bytes: t });
    assert.deepEqual(
      log.entries().map((entry) => entry.t),
      [2, 3, 4],
    );
    assert.equal(log.dropped, 2);
    assert.deepEqual(
      log.entries(3).map((entry) => entry.t),
      [3, 4],
    );
  });

  it("forgets entries older than maxAgeMs", () => {
    const log = new TrafficLog({ maxEntries: 100, maxAgeMs: 30 });
    for (let t = 0; t <= 100; t += 10) log.push({ t, from: "a", to: "b", bytes: 1 });
    assert.deepEqual(
      log.entries().map((entry) => entry.t),
      [70, 80, 90, 100],
    );
    log.prune(1000);
    assert.equal(log.size, 0);
  });
});
