import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { spread, summarize } from "../../../src/bench/summary.ts";

describe("bench summary", () => {
  it("spread: median, min, max, count; nothing → null", () => {
    assert.deepEqual(spread([3, 1, 2, 10]), { median: 2.5, min: 1, max: 10, n: 4 });
    assert.equal(spread([]), null);
  });

  it("groups rows, summarizes metrics, skips nulls, and divides by the baseline's median within the same size", () => {
    const rows = [
      { mem: 512, strategy: "full", ms: 3000, ttr: 3100 },
      { mem: 512, strategy: "full", ms: 2800, ttr: null },
      { mem: 512, strategy: "hotrestore", ms: 300, ttr: 1700 },
      { mem: 512, strategy: "hotrestore", ms: 280, ttr: 1500 },
      { mem: 1024, strategy: "full", ms: 4500, ttr: 4600 },
      { mem: 1024, strategy: "hotrestore", ms: 450, ttr: null },
    ];
    const summary = summarize(rows, {
      by: ["mem", "strategy"],
      metrics: ["ms", "ttr"],
      baseline: { match: { strategy: "full" }, within: ["mem"] },
    });
    assert.equal(summary.length, 4);
    const hot512 = summary.find((row) => row.mem === 512 && row.strategy === "hotrestore");
    assert.deepEqual(hot512, {
      mem: 512,
      strategy: "hotrestore",
      reps: 2,
      ms: { median: 290, min: 280, max: 300, n: 2 },
      ttr: { median: 1600, min: 1500, max: 1700, n: 2 },
      msVsBaseline: 0.1,
      ttrVsBaseline: 0.516,
    });
    const hot1024 = summary.find((row) => row.mem === 1024 && row.strategy === "hotrestore");
    assert.equal(hot1024?.ttr, null);
    assert.equal(hot1024?.ttrVsBaseline, null);
    assert.equal(hot1024?.msVsBaseline, 0.1);
    const full512 = summary.find((row) => row.mem === 512 && row.strategy === "full");
    assert.equal(full512?.msVsBaseline, 1);
  });
});
