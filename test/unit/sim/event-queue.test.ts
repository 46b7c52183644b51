import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { EventQueue } from "../../../src/sim/event-queue.ts";

function drain<T>(queue: EventQueue<T>): { time: number; payload: T }[] {
  const out: { time: number; payload: T }[] = [];
  for (let event = queue.pop(); event !== undefined; event = queue.pop()) {
    out.push({ time: event.time, payload: event.payload });
  }
  return out;
}

describe("event queue", () => {
  it("is empty at first", () => {
    const queue = new EventQueue<string>();
    assert.equal(queue.size, 0);
    assert.equal(queue.peek(), undefined);
    assert.equal(queue.pop(), undefined);
  });

  it("pops the earliest event first", () => {
    const queue = new EventQueue<string>();
    queue.push(30, "c");
    queue.push(10, "a");
    queue.push(20, "b");
    assert.equal(queue.size, 3);
    assert.equal(queue.peek()?.payload, "a");
    assert.deepEqual(
      drain(queue).map((event) => event.payload),
      ["a", "b", "c"],
    );
    assert.equal(queue.size, 0);
  });

  it("keeps insertion order among events at one time", () => {
    const queue = new EventQueue<number>();
    for (let index = 0; index < 50; index += 1) queue.push(index % 3 === 0 ? 5 : 1, index);
    const popped = drain(queue);
    const ones = popped.filter((event) => event.time === 1).map((event) => event.payload);
    const fives = popped.filter((event) => event.time === 5).map((event) => event.payload);
    assert.deepEqual(
      ones,
      [...ones].sort((x, y) => x - y),
    );
    assert.deepEqual(
      fives,
      [...fives].sort((x, y) => x - y),
    );
    assert.deepEqual(
      popped.map((event) => event.time),
      [...ones.map(() => 1), ...fives.map(() => 5)],
    );
  });

  it("accepts pushes between pops", () => {
    const queue = new EventQueue<string>();
    queue.push(10, "a");
    queue.push(5, "b");
    assert.equal(queue.pop()?.payload, "b");
    queue.push(1, "c");
    queue.push(10, "d");
    assert.deepEqual(
      drain(queue).map((event) => event.payload),
      ["c", "a", "d"],
    );
  });

  it("rejects a NaN time", () => {
    assert.throws(() => new EventQueue<number>().push(Number.NaN, 1), RangeError);
  });

  it("pops in (time, insertion) order for any pushes (property)", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: -5, max: 20 }), { maxLength: 300 }), (times) => {
        const queue = new EventQueue<number>();
        times.forEach((time, index) => queue.push(time, index));
        const expected = times
          .map((time, index) => ({ time, payload: index }))
          .sort((x, y) => x.time - y.time || x.payload - y.payload);
        assert.deepEqual(drain(queue), expected);
      }),
    );
  });
});
