/** Time to responsiveness: the workload form (touch-rate history) and the fault-stall form. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { faultStallTtr, parseHistory, workloadTtr, type HistoryTick } from "../../../src/metrics/ttr.ts";

const TICK_MS = 50;
const NORMAL = 1000;
const SLOW = 100;

/**
 * A `mem` workload history: a tick every 50 ms with the cumulative touch count. `perTick(atMs)`
 * is the number of touches done in the 50 ms that end at `atMs`.
 */
function history(fromMs: number, toMs: number, perTick: (atMs: number) => number): HistoryTick[] {
  const out: HistoryTick[] = [];
  let touches = 0;
  for (let atMs = fromMs; atMs <= toMs; atMs += TICK_MS) {
    if (atMs > fromMs) touches += perTick(atMs);
    out.push({ atMs, touches });
  }
  return out;
}

describe("parseHistory", () => {
  it("reads `ms touches` lines, skips malformed ones and sorts by time", () => {
    const text = [
      "100 5",
      "garbage",
      "  50 3  ",
      "",
      "1.5 2",
      "-3 4",
      "200 7 8",
      "300",
      "150 6\r",
      "0 0",
    ].join("\n");
    assert.deepEqual(parseHistory(text), [
      { atMs: 0, touches: 0 },
      { atMs: 50, touches: 3 },
      { atMs: 100, touches: 5 },
      { atMs: 150, touches: 6 },
    ]);
  });

  it("reads nothing from an empty text", () => {
    assert.deepEqual(parseHistory(""), []);
  });
});

describe("workloadTtr", () => {
  const CUT = 3000;

  it("is the start plus the delay until the first window back at the pre-snapshot rate", () => {
    // Normal before the cut, slow for 500 ms after it, normal again from then on.
    const ticks = history(0, 5000, (atMs) => (atMs > CUT && atMs <= CUT + 500 ? SLOW : NORMAL));
    const result = workloadTtr({ history: ticks, cutGuestMs: CUT, startedMs: 1234 });
    assert.equal(result.baselineRate, (NORMAL * 1000) / TICK_MS);
    assert.equal(result.firstRate, (SLOW * 1000) / TICK_MS);
    assert.equal(result.ttrMs, 1234 + 500);
  });

  it("does not depend on the history's tick order once parsed", () => {
    const ticks = history(0, 5000, (atMs) => (atMs > CUT && atMs <= CUT + 500 ? SLOW : NORMAL));
    const text = [...ticks]
      .reverse()
      .map((tick) => `${tick.atMs} ${tick.touches}`)
      .join("\n");
    assert.equal(workloadTtr({ history: parseHistory(text), cutGuestMs: CUT, startedMs: 1234 }).ttrMs, 1734);
  });

  it("is the start itself when the guest resumes at full rate", () => {
    const ticks = history(0, 4000, () => NORMAL);
    assert.equal(workloadTtr({ history: ticks, cutGuestMs: CUT, startedMs: 800 }).ttrMs, 800);
  });

  it("accepts a rate at the required share of the baseline", () => {
    const ticks = history(0, 4000, (atMs) => (atMs > CUT ? NORMAL * 0.9 : NORMAL));
    assert.equal(workloadTtr({ history: ticks, cutGuestMs: CUT, startedMs: 10 }).ttrMs, 10);
    const stricter = workloadTtr({ history: ticks, cutGuestMs: CUT, startedMs: 10, share: 0.95 });
    assert.equal(stricter.ttrMs, null);
  });

  it("is null while the rate has not recovered", () => {
    const ticks = history(0, 5000, (atMs) => (atMs > CUT ? SLOW : NORMAL));
    const result = workloadTtr({ history: ticks, cutGuestMs: CUT, startedMs: 1234 });
    assert.equal(result.ttrMs, null);
    assert.equal(result.baselineRate, (NORMAL * 1000) / TICK_MS);
    assert.equal(result.firstRate, (SLOW * 1000) / TICK_MS);
  });

  it("is null without a pre-snapshot rate", () => {
    const idle = history(0, 5000, (atMs) => (atMs > CUT ? NORMAL : 0));
    const result = workloadTtr({ history: idle, cutGuestMs: CUT, startedMs: 10 });
    assert.equal(result.baselineRate, 0);
    assert.equal(result.ttrMs, null);
    const afterOnly = history(CUT, 5000, () => NORMAL);
    assert.equal(workloadTtr({ history: afterOnly, cutGuestMs: CUT, startedMs: 10 }).ttrMs, null);
  });

  it("is null without any tick after the cut", () => {
    const beforeOnly = history(0, CUT - TICK_MS, () => NORMAL);
    const result = workloadTtr({ history: beforeOnly, cutGuestMs: CUT, startedMs: 10 });
    assert.equal(result.ttrMs, null);
    assert.equal(result.firstRate, null);
  });
});

describe("faultStallTtr", () => {
  it("is the start when no fault stalls the guest after it", () => {
    assert.equal(faultStallTtr({ stalls: [], startedUs: 1_234_567 }), 1235);
    const beforeStart = [{ fromUs: 0, toUs: 1_000_000 }];
    assert.equal(faultStallTtr({ stalls: beforeStart, startedUs: 1_000_000 }), 1000);
  });

  it("is about the end of a dense stall period after the start", () => {
    const startedUs = 1_000_000;
    // 0.9 ms of every ms stalled for 300 ms, then nothing.
    const stalls = Array.from({ length: 300 }, (_, i) => ({
      fromUs: startedUs + i * 1000,
      toUs: startedUs + i * 1000 + 900,
    }));
    const ttr = faultStallTtr({ stalls, startedUs });
    assert.ok(ttr >= 1000 + 250 && ttr <= 1000 + 300, `ttr ${ttr}`);
  });

  it("counts overlapping stalls once", () => {
    // 8 ms of stall three times over: 8% of the first window, responsive at once.
    const same = Array.from({ length: 3 }, () => ({ fromUs: 0, toUs: 8000 }));
    assert.equal(faultStallTtr({ stalls: same, startedUs: 0 }), 0);
    const overlapping = [
      { fromUs: 3000, toUs: 9000 },
      { fromUs: 0, toUs: 6000 },
    ];
    assert.equal(faultStallTtr({ stalls: overlapping, startedUs: 0 }), 0);
  });

  it("waits out a stall longer than a window", () => {
    const ttr = faultStallTtr({ stalls: [{ fromUs: 0, toUs: 500_000 }], startedUs: 0 });
    assert.ok(ttr > 400 && ttr <= 500, `ttr ${ttr}`);
  });

  it("is not responsive while separate stalls add up to 10% of a window", () => {
    const stalls = [
      { fromUs: 0, toUs: 6000 },
      { fromUs: 50_000, toUs: 56_000 },
    ];
    assert.ok(faultStallTtr({ stalls, startedUs: 0 }) > 0);
  });
});
