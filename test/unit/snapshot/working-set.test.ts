import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { writesAfterCut, type PageRef } from "../../../src/snapshot/working-set.ts";

const p = (block: number, page: number): PageRef => ({ block, page });

describe("working set from a background snapshot's page order", () => {
  it("a pure scan has no writes", () => {
    const scan = Array.from({ length: 100 }, (_, i) => p(i < 80 ? 0 : 1, i % 80));
    assert.deepEqual(writesAfterCut(scan, [80, 20]), []);
  });

  it("a written page is sent out of order and the scan carries on from it", () => {
    // scan 0..2, guest writes 50 (scan continues 51..59), then 40 (scan 41..49), then the scan
    // runs past the end of block 0 into block 1 and wraps back to the pages it skipped (3..39)
    const stream = [p(0, 0), p(0, 1), p(0, 2), p(0, 50)];
    for (let i = 51; i < 60; i += 1) stream.push(p(0, i));
    stream.push(p(0, 40));
    for (let i = 41; i < 50; i += 1) stream.push(p(0, i));
    stream.push(p(1, 0), p(1, 1));
    for (let i = 3; i < 40; i += 1) stream.push(p(0, i));
    assert.deepEqual(writesAfterCut(stream, [60, 2]), [p(0, 50), p(0, 40)]);
  });

  it("the scan skipping pages already sent is not a write", () => {
    const stream = [p(0, 5), p(0, 6), p(0, 0), p(0, 1), p(0, 2), p(0, 3), p(0, 4), p(0, 7), p(0, 8)];
    assert.deepEqual(writesAfterCut(stream, [9]), [p(0, 5), p(0, 0)]);
  });

  it("is fast enough for a 4 GiB guest", () => {
    const stream: PageRef[] = [];
    for (let i = 0; i < 1_048_576; i += 1) {
      stream.push(p(0, i));
      if (i % 1000 === 0 && i + 5000 < 1_048_576) stream.push(p(0, i + 5000));
    }
    const writes = writesAfterCut(stream, [1_048_576]);
    assert.ok(writes.length > 1000 && writes.length <= 2100, String(writes.length));
  });
});
