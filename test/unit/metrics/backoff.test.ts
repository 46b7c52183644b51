/** TCP backoff during a restore: which flows are tracked, and what the tracker reports. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  ACTIVE_AT_CUT_MS,
  BackoffTracker,
  flowsActiveAtCut,
  TIMELINE_SEGMENTS,
  type TrackedFlow,
} from "../../../src/metrics/backoff.ts";
import type { DirectionStats, Flow } from "../../../src/net/flows.ts";

function direction(overrides: Partial<DirectionStats> = {}): DirectionStats {
  return {
    segments: 10,
    payloadBytes: 0,
    retransmissions: 0,
    seqEnd: 1000,
    highestAck: 500,
    synSeen: true,
    finSeen: false,
    rstSeen: false,
    firstSeen: 0,
    lastSeen: 100,
    lastProgress: 100,
    lastRetransmission: undefined,
    ...overrides,
  };
}

interface FlowSpec {
  key: string;
  aVm?: string | undefined;
  bVm?: string | undefined;
  ab?: Partial<DirectionStats>;
  ba?: Partial<DirectionStats>;
  lastSeenAgoMs?: number;
}

/** A flow as saved in a snapshot's traffic record; a.vm/b.vm default to "vm-a"/"vm-b". */
function flow(spec: FlowSpec): Flow & { lastSeenAgoMs?: number } {
  const out: Flow & { lastSeenAgoMs?: number } = {
    key: spec.key,
    a: { ip: "10.77.0.1", port: 40000, vm: "aVm" in spec ? spec.aVm : "vm-a" },
    b: { ip: "10.77.0.2", port: 80, vm: "bVm" in spec ? spec.bVm : "vm-b" },
    initiator: "a",
    ab: direction({ payloadBytes: 100, ...spec.ab }),
    ba: direction({ payloadBytes: 10, ...spec.ba }),
    firstSeen: 0,
    lastSeen: 100,
    lastProgress: 100,
  };
  if (spec.lastSeenAgoMs !== undefined) out.lastSeenAgoMs = spec.lastSeenAgoMs;
  return out;
}

const keys = (flows: readonly TrackedFlow[]): string[] => flows.map((entry) => entry.key);

describe("flows active at the cut", () => {
  it("keeps an open, recent flow with both VMs known", () => {
    assert.deepEqual(flowsActiveAtCut([flow({ key: "f1", lastSeenAgoMs: 20 })]), [
      { key: "f1", from: "vm-a", to: "vm-b" },
    ]);
  });

  it("excludes flows closed by FIN or RST in either direction", () => {
    const flows = [
      flow({ key: "fin-ab", ab: { finSeen: true } }),
      flow({ key: "fin-ba", ba: { finSeen: true } }),
      flow({ key: "rst-ab", ab: { rstSeen: true } }),
      flow({ key: "rst-ba", ba: { rstSeen: true } }),
      flow({ key: "open" }),
    ];
    assert.deepEqual(keys(flowsActiveAtCut(flows)), ["open"]);
  });

  it(`excludes flows idle for more than ${ACTIVE_AT_CUT_MS} ms before the cut`, () => {
    const flows = [
      flow({ key: "stale", lastSeenAgoMs: ACTIVE_AT_CUT_MS + 1 }),
      flow({ key: "edge", lastSeenAgoMs: ACTIVE_AT_CUT_MS }),
      flow({ key: "unknown-age" }),
    ];
    assert.deepEqual(keys(flowsActiveAtCut(flows)), ["edge", "unknown-age"]);
  });

  it("excludes flows with an end whose VM is unknown", () => {
    const flows = [flow({ key: "no-a", aVm: undefined }), flow({ key: "no-b", bVm: undefined })];
    assert.deepEqual(flowsActiveAtCut(flows), []);
  });

  it("names the end that sent more payload bytes as the sender", () => {
    const flows = [
      flow({ key: "a-sends", ab: { payloadBytes: 5000 }, ba: { payloadBytes: 40 } }),
      flow({ key: "b-sends", ab: { payloadBytes: 40 }, ba: { payloadBytes: 5000 } }),
    ];
    assert.deepEqual(flowsActiveAtCut(flows), [
      { key: "a-sends", from: "vm-a", to: "vm-b" },
      { key: "b-sends", from: "vm-b", to: "vm-a" },
    ]);
  });

  it("sorts the result by key", () => {
    const flows = ["tcp/3", "tcp/1", "tcp/2"].map((key) => flow({ key }));
    assert.deepEqual(keys(flowsActiveAtCut(flows)), ["tcp/1", "tcp/2", "tcp/3"]);
  });
});

const F1: TrackedFlow = { key: "f1", from: "a", to: "b" };
const F2: TrackedFlow = { key: "f2", from: "b", to: "c" };
const F3: TrackedFlow = { key: "f3", from: "c", to: "a" };

function flowReport(
  tracker: BackoffTracker,
  key: string,
): ReturnType<BackoffTracker["report"]>["flows"][number] {
  const found = tracker.report().flows.find((entry) => entry.key === key);
  assert.ok(found !== undefined, `no report for ${key}`);
  return found;
}

describe("backoff tracker", () => {
  it("measures from the later of the two starts to the first progress", () => {
    const tracker = new BackoffTracker([F1]);
    tracker.started("a", 100);
    tracker.started("b", 250);
    tracker.observe("f1", 300, true, false);
    tracker.observe("f1", 420, true, false);
    assert.equal(flowReport(tracker, "f1").ms, 50);
  });

  it("counts progress exactly when both VMs run", () => {
    const tracker = new BackoffTracker([F1]);
    tracker.started("b", 40);
    tracker.started("a", 90);
    tracker.observe("f1", 90, true, false);
    assert.equal(flowReport(tracker, "f1").ms, 0);
  });

  it("ignores progress seen before both VMs run", () => {
    const tracker = new BackoffTracker([F1]);
    tracker.observe("f1", 10, true, false);
    tracker.started("a", 100);
    tracker.observe("f1", 150, true, false);
    assert.equal(tracker.complete, false);
    tracker.started("b", 200);
    assert.equal(flowReport(tracker, "f1").ms, null);
    tracker.observe("f1", 260, true, false);
    assert.equal(flowReport(tracker, "f1").ms, 60);
  });

  it("ignores segments that are not progress", () => {
    const tracker = new BackoffTracker([F1]);
    tracker.started("a", 0);
    tracker.started("b", 0);
    tracker.observe("f1", 30, false, false);
    tracker.observe("f1", 40, false, true);
    assert.equal(flowReport(tracker, "f1").ms, null);
    tracker.observe("f1", 70, true, false);
    assert.equal(flowReport(tracker, "f1").ms, 70);
  });

  it("keeps a VM's first start time", () => {
    const tracker = new BackoffTracker([F1]);
    tracker.started("a", 100);
    tracker.started("b", 200);
    tracker.started("b", 900);
    tracker.observe("f1", 250, true, false);
    assert.equal(flowReport(tracker, "f1").ms, 50);
  });

  it("counts retransmissions per flow and in total, untracked flows in the total only", () => {
    const tracker = new BackoffTracker([F1, F2]);
    tracker.observe("f1", 1, false, true);
    tracker.observe("f1", 2, false, true);
    tracker.observe("f2", 3, false, true);
    tracker.observe("f2", 4, true, false);
    tracker.observe("elsewhere", 5, false, true);
    assert.equal(tracker.retransmits, 4);
    assert.equal(flowReport(tracker, "f1").retransmits, 2);
    assert.equal(flowReport(tracker, "f2").retransmits, 1);
    assert.deepEqual(keys(tracker.report().flows).sort(), ["f1", "f2"]);
  });

  it("is complete once every tracked flow progressed", () => {
    const tracker = new BackoffTracker([F1, F2]);
    for (const vm of ["a", "b", "c"]) tracker.started(vm, 0);
    assert.equal(tracker.complete, false);
    tracker.observe("f1", 10, true, false);
    tracker.observe("other", 11, true, false);
    assert.equal(tracker.complete, false);
    tracker.observe("f2", 12, true, false);
    assert.equal(tracker.complete, true);
  });

  it("is complete at once with no flow to track", () => {
    const tracker = new BackoffTracker([]);
    assert.equal(tracker.complete, true);
    assert.deepEqual(tracker.report(), { maxMs: null, medianMs: null, stalledFlows: 0, flows: [] });
  });

  it("reports the maximum and median backoff and the stalled flows", () => {
    const fourth: TrackedFlow = { key: "f4", from: "a", to: "c" };
    const tracker = new BackoffTracker([F1, F2, F3, fourth]);
    for (const vm of ["a", "b", "c"]) tracker.started(vm, 100);
    tracker.observe("f1", 110, true, false);
    tracker.observe("f2", 400, true, false);
    tracker.observe("f3", 130, true, false);
    const report = tracker.report();
    assert.equal(report.maxMs, 300);
    assert.equal(report.medianMs, 30);
    assert.equal(report.stalledFlows, 1);
    assert.deepEqual(
      report.flows.map((entry) => [entry.key, entry.from, entry.to, entry.ms]),
      [
        ["f1", "a", "b", 10],
        ["f2", "b", "c", 300],
        ["f3", "c", "a", 30],
        ["f4", "a", "c", null],
      ],
    );
  });

  it("reports no figures when no flow progressed", () => {
    const tracker = new BackoffTracker([F1, F2]);
    tracker.started("a", 0);
    tracker.observe("f1", 10, true, false);
    const report = tracker.report();
    assert.equal(report.maxMs, null);
    assert.equal(report.medianMs, null);
    assert.equal(report.stalledFlows, 2);
  });

  it("keeps each tracked flow's first segments, with their kind", () => {
    const tracker = new BackoffTracker([F1]);
    tracker.observe("f1", 5, false, false);
    tracker.started("a", 10);
    tracker.started("b", 10);
    tracker.observe("f1", 20, false, true);
    tracker.observe("f1", 30, true, true);
    tracker.observe("f1", 40, true, false);
    tracker.observe("untracked", 50, true, false);
    assert.deepEqual(flowReport(tracker, "f1").segments, [
      { atMs: 5, kind: "other" },
      { atMs: 20, kind: "retransmit" },
      { atMs: 30, kind: "retransmit" },
      { atMs: 40, kind: "progress" },
    ]);
  });

  it(`caps a flow's timeline at ${TIMELINE_SEGMENTS} segments but keeps counting`, () => {
    const tracker = new BackoffTracker([F1]);
    for (let at = 0; at < TIMELINE_SEGMENTS * 3; at += 1) tracker.observe("f1", at, false, true);
    tracker.started("a", 0);
    tracker.started("b", 0);
    tracker.observe("f1", 1000, true, false);
    const report = flowReport(tracker, "f1");
    assert.equal(report.segments.length, TIMELINE_SEGMENTS);
    assert.deepEqual(
      report.segments.map((segment) => segment.atMs),
      Array.from({ length: TIMELINE_SEGMENTS }, (_, i) => i),
    );
    assert.equal(report.retransmits, TIMELINE_SEGMENTS * 3);
    assert.equal(report.ms, 1000, "progress past the timeline's end still counts");
  });
});
