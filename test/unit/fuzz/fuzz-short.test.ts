/**
 * The short fuzz run, part of `npm test`: every target of test/fuzz/targets.ts with a few
 * thousand inputs from a fixed seed per target (a failure prints the seed and path that replay
 * it, and the shrunk input), then its huge-length inputs. The long run is `npm run fuzz`.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { QmpDecoder } from "../../../src/qmp/framing.ts";
import { isHrError } from "../../../src/util/errors.ts";
import { fuzzProperty, MAX_ALLOCATION_BYTES, OutcomeStats, seedOf } from "../../fuzz/harness.ts";
import { TARGETS } from "../../fuzz/targets.ts";

/** Inputs per target: about 20 s for the whole file on 2 cores. */
const RUNS = 2000;
const HUGE_RUNS = 200;

void describe("fuzz, short run (the long run is npm run fuzz)", () => {
  for (const target of TARGETS) {
    void it(`${target.name}: ${RUNS} inputs, only typed errors, no hang, bounded allocation`, (t) => {
      const stats = new OutcomeStats();
      fc.assert(fuzzProperty(target, stats), { numRuns: RUNS, seed: seedOf(target.name) });
      t.diagnostic(`${stats.successes} parsed, ${stats.typedErrors} typed errors ${stats.codes()}`);
      assert.ok(stats.successes > 0, "no input parsed: the generators no longer reach valid input");
    });
    const huge = target.hugeLengths;
    if (huge === undefined) continue;
    void it(`${target.name}: ${HUGE_RUNS} inputs claiming huge lengths are refused without allocating`, () => {
      fc.assert(fuzzProperty(target, undefined, huge), {
        numRuns: HUGE_RUNS,
        seed: seedOf(`${target.name}/huge`),
      });
    });
  }

  void it("qmp-decoder: a line beyond the 16 MiB limit is refused, holding no more than the limit", () => {
    const decoder = new QmpDecoder();
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const before = process.memoryUsage().arrayBuffers;
    let pushed = 0;
    let peak = 0;
    assert.throws(
      () => {
        for (;;) {
          decoder.push(chunk, () => assert.fail("a line without LF was delivered"));
          pushed += chunk.length;
          peak = Math.max(peak, process.memoryUsage().arrayBuffers - before);
        }
      },
      (error: unknown) => isHrError(error, "QMP_PROTOCOL"),
    );
    assert.ok(pushed <= 16 * 1024 * 1024 + 1, `accepted ${pushed} bytes without a line end`);
    assert.ok(peak < MAX_ALLOCATION_BYTES, `grew ArrayBuffer memory by ${peak} bytes`);
  });
});
