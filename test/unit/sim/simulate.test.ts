import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { compareOrders } from "../../../src/sim/compare.ts";
import type {
  RestoreOrder,
  SimFlow,
  SimFlowResult,
  SimOptions,
  SimResult,
  SimVm,
} from "../../../src/sim/model.ts";
import { randomCluster } from "../../../src/sim/random.ts";
import { simulateRestore } from "../../../src/sim/simulate.ts";
import { isHrError } from "../../../src/util/errors.ts";

/**
 * Hand-made clusters of 2–4 VMs with exact expected numbers (default link latency 0.1 ms, initial
 * RTO 200 ms). Float sums such as 1500 + 0.1 are compared within 1e-9.
 */
const EPSILON = 1e-9;

/** `vms`: ready time by name. */
function run(
  vms: Record<string, number>,
  flows: (SimFlow | [string, string])[],
  order: RestoreOrder,
  hold: boolean,
  options: SimOptions = {},
): SimResult {
  const simVms: SimVm[] = Object.entries(vms).map(([name, readyMs]) => ({ name, readyMs }));
  const simFlows = flows.map((flow) => (Array.isArray(flow) ? { from: flow[0], to: flow[1] } : flow));
  return simulateRestore({ vms: simVms, flows: simFlows, order, hold, options });
}

function close(actual: number, expected: number, label: string): void {
  assert.ok(Math.abs(actual - expected) < EPSILON, `${label}: expected ${expected}, got ${actual}`);
}

function flowIs(
  flow: SimFlowResult | undefined,
  expected: {
    progressMs: number;
    backoffMs: number;
    retransmissions: number;
    sawDrop: boolean;
    heldFrames: number;
  },
): void {
  assert.ok(flow !== undefined, "flow missing");
  const label = `${flow.from}→${flow.to}`;
  close(flow.progressMs, expected.progressMs, `${label} progress`);
  close(flow.backoffMs, expected.backoffMs, `${label} backoff`);
  assert.equal(flow.retransmissions, expected.retransmissions, `${label} retransmissions`);
  assert.equal(flow.sawDrop, expected.sawDrop, `${label} drop`);
  assert.equal(flow.heldFrames, expected.heldFrames, `${label} held`);
}

const EARLY_SENDER: Record<string, number> = { a: 100, b: 1000 };

describe("simulateRestore: one flow a→b, a ready at 100 ms, b at 1000 ms", () => {
  it("as-ready without hold: a's segments are dropped and it waits out the RTO ladder", () => {
    // a runs from 100: expiries at 300 and 700 (b stopped: dropped), then 1500 (RTO 800).
    const result = run(EARLY_SENDER, [["a", "b"]], "as-ready", false);
    assert.deepEqual(result.startMs, { a: 100, b: 1000 });
    assert.equal(result.clusterLatencyMs, 1000);
    flowIs(result.flows[0], {
      progressMs: 1500.1,
      backoffMs: 500.1,
      retransmissions: 3,
      sawDrop: true,
      heldFrames: 0,
    });
    close(result.maxBackoffMs, 500.1, "max");
    close(result.medianBackoffMs, 500.1, "median");
    assert.equal(result.retransmissions, 3);
    assert.equal(result.flowsWithDrop, 1);
    close(result.lastProgressMs, 1500.1, "last progress");
  });

  it("as-ready with hold: no backoff, but the two early retransmissions are held", () => {
    // In-flight segment + retransmissions at 300 and 700, all delivered at b's start.
    const result = run(EARLY_SENDER, [["a", "b"]], "as-ready", true);
    flowIs(result.flows[0], {
      progressMs: 1000,
      backoffMs: 0,
      retransmissions: 2,
      sawDrop: false,
      heldFrames: 3,
    });
  });

  it("simultaneous without hold: the in-flight segment is lost, one RTO of 200 ms", () => {
    const result = run(EARLY_SENDER, [["a", "b"]], "simultaneous", false);
    assert.deepEqual(result.startMs, { a: 1000, b: 1000 });
    flowIs(result.flows[0], {
      progressMs: 1200.1,
      backoffMs: 200.1,
      retransmissions: 1,
      sawDrop: true,
      heldFrames: 0,
    });
  });

  it("simultaneous with hold: the held segment arrives at the start", () => {
    const result = run(EARLY_SENDER, [["a", "b"]], "simultaneous", true);
    flowIs(result.flows[0], {
      progressMs: 1000,
      backoffMs: 0,
      retransmissions: 0,
      sawDrop: false,
      heldFrames: 1,
    });
  });

  it("restore-line makes the sender wait for its receiver", () => {
    const result = run(EARLY_SENDER, [["a", "b"]], "restore-line", true);
    assert.deepEqual(result.startMs, { a: 1000, b: 1000 });
    assert.equal(result.retransmissions, 0);
  });
});

describe("simulateRestore: one flow a→b, the receiver b ready first", () => {
  const vms: Record<string, number> = { a: 1000, b: 100 };

  it("restore-line with hold: b gets the segment at 100, its ACK is held until a starts", () => {
    const result = run(vms, [["a", "b"]], "restore-line", true);
    assert.deepEqual(result.startMs, { a: 1000, b: 100 });
    flowIs(result.flows[0], {
      progressMs: 1000,
      backoffMs: 0,
      retransmissions: 0,
      sawDrop: false,
      heldFrames: 2,
    });
  });

  it("restore-line without hold: the lost in-flight segment costs one RTO", () => {
    const result = run(vms, [["a", "b"]], "restore-line", false);
    flowIs(result.flows[0], {
      progressMs: 1200.1,
      backoffMs: 200.1,
      retransmissions: 1,
      sawDrop: true,
      heldFrames: 0,
    });
  });

  it("a started when b's ACK is still on the wire sees it one link latency later", () => {
    const result = run({ a: 100.05, b: 100 }, [["a", "b"]], "restore-line", true);
    // Data to b at 100 (a stopped: no progress yet); ACK reaches a at 100.1, a runs since 100.05.
    flowIs(result.flows[0], {
      progressMs: 100.1,
      backoffMs: 0.05,
      retransmissions: 0,
      sawDrop: false,
      heldFrames: 1,
    });
  });
});

describe("simulateRestore: four VMs, a→b and a 2-cycle c↔d", () => {
  const vms: Record<string, number> = { a: 300, b: 100, c: 50, d: 900 };
  const flows: [string, string][] = [
    ["a", "b"],
    ["c", "d"],
    ["d", "c"],
  ];

  it("restore-line starts the component together, at its slowest member", () => {
    const result = run(vms, flows, "restore-line", true);
    assert.deepEqual(result.startMs, { a: 300, b: 100, c: 900, d: 900 });
    assert.equal(result.clusterLatencyMs, 900);
    assert.equal(result.medianStartMs, 600);
    assert.equal(result.maxBackoffMs, 0);
    assert.equal(result.retransmissions, 0);
    assert.equal(result.flowsWithDrop, 0);
  });

  it("as-ready without hold: c waits out its ladder, d's lost segment one RTO", () => {
    const result = run(vms, flows, "as-ready", false);
    // a→b: a starts at 300 after b: RTO at 500. c→d: c runs from 50: 250, 650 dropped, 1450 delivered.
    flowIs(result.flows[0], {
      progressMs: 500.1,
      backoffMs: 200.1,
      retransmissions: 1,
      sawDrop: true,
      heldFrames: 0,
    });
    flowIs(result.flows[1], {
      progressMs: 1450.1,
      backoffMs: 550.1,
      retransmissions: 3,
      sawDrop: true,
      heldFrames: 0,
    });
    flowIs(result.flows[2], {
      progressMs: 1100.1,
      backoffMs: 200.1,
      retransmissions: 1,
      sawDrop: true,
      heldFrames: 0,
    });
    close(result.maxBackoffMs, 550.1, "max");
    close(result.medianBackoffMs, 200.1, "median");
    assert.equal(result.retransmissions, 5);
    assert.equal(result.flowsWithDrop, 3);
  });
});

describe("simulateRestore: timer options", () => {
  const pair: Record<string, number> = { a: 0, b: 0 };

  it("takes the srtt-based RTO when above 200 ms, 200 ms when below", () => {
    const slow = run(pair, [["a", "b"]], "simultaneous", false, { srttRtoMs: 300 });
    close(slow.flows[0]?.backoffMs ?? -1, 300.1, "srtt 300");
    const fast = run(pair, [["a", "b"]], "simultaneous", false, { srttRtoMs: 20 });
    close(fast.flows[0]?.backoffMs ?? -1, 200.1, "srtt 20");
  });

  it("subtracts the RTO already elapsed at the cut from the first expiry", () => {
    const result = run(pair, [{ from: "a", to: "b", rtoElapsedMs: 150 }], "simultaneous", false);
    close(result.flows[0]?.backoffMs ?? -1, 50.1, "elapsed 150");
  });

  it("uses the configured link latency", () => {
    const result = run(EARLY_SENDER, [["a", "b"]], "as-ready", false, { linkLatencyMs: 0.5 });
    close(result.flows[0]?.progressMs ?? -1, 1500.5, "latency 0.5");
  });

  it("caps the RTO at 120 s", () => {
    // Expiries at 200, 600, 1400, 3000, 6200, 12600, 25400, 51000, 102200 (RTO now 102400),
    // 204600 (capped: 120000 from here), 324600, 444600, 564600, 684600, 804600, 924600, 1044600.
    const result = run({ a: 0, b: 1_000_000 }, [["a", "b"]], "as-ready", false);
    flowIs(result.flows[0], {
      progressMs: 1_044_600.1,
      backoffMs: 44_600.1,
      retransmissions: 17,
      sawDrop: true,
      heldFrames: 0,
    });
  });
});

describe("simulateRestore: edge cases and bad input", () => {
  it("simulates an empty cluster", () => {
    const result = run({}, [], "restore-line", true);
    assert.equal(result.clusterLatencyMs, 0);
    assert.equal(result.maxBackoffMs, 0);
    assert.equal(result.medianBackoffMs, 0);
    assert.deepEqual(result.flows, []);
  });

  const rejects = (make: () => unknown, pattern: RegExp): void => {
    assert.throws(
      make,
      (error: unknown) => isHrError(error, "SIM_INVALID_INPUT") && pattern.test(error.message),
    );
  };

  it("rejects a flow naming an unknown VM", () => {
    rejects(() => run(EARLY_SENDER, [["a", "z"]], "as-ready", false), /VM z, which is not listed/);
  });
  it("rejects a negative or non-finite ready time", () => {
    rejects(() => run({ a: -1 }, [], "as-ready", false), /VM a: ready time/);
    rejects(() => run({ a: Number.NaN }, [], "as-ready", false), /VM a: ready time/);
  });
  it("rejects a VM listed twice, a flow to itself, a bad elapsed time or latency", () => {
    rejects(
      () =>
        simulateRestore({
          vms: [
            { name: "a", readyMs: 1 },
            { name: "a", readyMs: 5 },
          ],
          flows: [],
          order: "as-ready",
          hold: false,
        }),
      /listed twice/,
    );
    rejects(() => run(EARLY_SENDER, [["a", "a"]], "as-ready", false), /to itself/);
    rejects(
      () => run(EARLY_SENDER, [{ from: "a", to: "b", rtoElapsedMs: 200 }], "as-ready", false),
      /rtoElapsed/,
    );
    rejects(() => run(EARLY_SENDER, [], "as-ready", false, { linkLatencyMs: -1 }), /link latency/);
  });
});

/** A random cluster: any directed graph (cycles allowed) over up to `maxVms` VMs. */
const clusterArbitrary = (maxVms: number): fc.Arbitrary<{ vms: SimVm[]; flows: SimFlow[] }> =>
  fc.integer({ min: 1, max: maxVms }).chain((count) =>
    fc.record({
      vms: fc
        .array(fc.oneof(fc.integer({ min: 0, max: 5_000 }), fc.double({ min: 0, max: 5_000, noNaN: true })), {
          minLength: count,
          maxLength: count,
        })
        .map((readies) => readies.map((readyMs, index) => ({ name: `vm${index}`, readyMs }))),
      flows: fc
        .array(fc.tuple(fc.nat(count - 1), fc.nat(count - 1)), { maxLength: count * 3 })
        .map((pairs) =>
          pairs
            .filter(([from, to]) => from !== to)
            .map(([from, to]) => ({ from: `vm${from}`, to: `vm${to}` })),
        ),
    }),
  );

const latencyArbitrary = fc.oneof(fc.constant(0.1), fc.double({ min: 0, max: 1, noNaN: true }));

/** VMs reachable from each VM along flows (itself included), by brute force. */
function reachable(vms: readonly SimVm[], flows: readonly SimFlow[]): Set<string>[] {
  return vms.map((vm) => {
    const seen = new Set([vm.name]);
    for (let grew = true; grew;) {
      grew = false;
      for (const flow of flows) {
        if (seen.has(flow.from) && !seen.has(flow.to)) {
          seen.add(flow.to);
          grew = true;
        }
      }
    }
    return seen;
  });
}

describe("simulateRestore: properties over random clusters", () => {
  it("restore-line with hold: backoff within one link latency, no retransmission, no drop", () => {
    fc.assert(
      fc.property(clusterArbitrary(12), latencyArbitrary, (cluster, linkLatencyMs) => {
        const result = simulateRestore({
          ...cluster,
          order: "restore-line",
          hold: true,
          options: { linkLatencyMs },
        });
        for (const flow of result.flows)
          assert.ok(flow.backoffMs <= linkLatencyMs + EPSILON, `${flow.backoffMs}`);
        assert.equal(result.retransmissions, 0);
        assert.equal(result.flowsWithDrop, 0);
      }),
    );
  });

  it("every backoff is ≥ 0; with hold, ≤ one link latency whatever the order", () => {
    const orders = fc.constantFrom<RestoreOrder>("as-ready", "simultaneous", "restore-line");
    fc.assert(
      fc.property(
        clusterArbitrary(10),
        orders,
        fc.boolean(),
        latencyArbitrary,
        (cluster, order, hold, latency) => {
          const result = simulateRestore({ ...cluster, order, hold, options: { linkLatencyMs: latency } });
          for (const flow of result.flows) {
            assert.ok(flow.backoffMs >= 0);
            assert.ok(flow.progressMs >= flow.bothRunningMs);
            assert.equal(flow.sawDrop, !hold);
            if (hold) assert.ok(flow.backoffMs <= latency + EPSILON);
            else assert.ok(flow.retransmissions >= 1);
          }
          assert.deepEqual(
            simulateRestore({ ...cluster, order, hold, options: { linkLatencyMs: latency } }),
            result,
          );
        },
      ),
    );
  });

  it("start times follow each order's rule", () => {
    fc.assert(
      fc.property(clusterArbitrary(10), ({ vms, flows }) => {
        const at = (result: SimResult, name: string): number => result.startMs[name] ?? Number.NaN;
        const latest = Math.max(...vms.map((vm) => vm.readyMs));
        const asReady = simulateRestore({ vms, flows, order: "as-ready", hold: false });
        const together = simulateRestore({ vms, flows, order: "simultaneous", hold: false });
        const line = simulateRestore({ vms, flows, order: "restore-line", hold: true });
        const reach = reachable(vms, flows);
        vms.forEach((vm, index) => {
          assert.equal(at(asReady, vm.name), vm.readyMs);
          assert.equal(at(together, vm.name), latest);
          // Earliest feasible: the latest ready time among the VMs it (transitively) sends to.
          const waitsFor = vms.filter((other) => reach[index]?.has(other.name));
          assert.equal(at(line, vm.name), Math.max(...waitsFor.map((other) => other.readyMs)));
        });
        for (const flow of flows) assert.ok(at(line, flow.to) <= at(line, flow.from));
        assert.equal(line.clusterLatencyMs, latest);
      }),
    );
  });

  it("a sender ready 1 s before its receiver, as-ready without hold, backs off for hundreds of ms", () => {
    fc.assert(
      fc.property(fc.double({ min: 0, max: 10_000, noNaN: true }), (senderReady) => {
        const result = run({ a: senderReady, b: senderReady + 1_000 }, [["a", "b"]], "as-ready", false);
        // Expiries 200 and 600 ms after the sender's start are dropped, 1400 reaches b (RTO 800).
        assert.ok(Math.abs(result.maxBackoffMs - 400.1) < 1e-6, `${result.maxBackoffMs}`);
        assert.equal(result.retransmissions, 3);
      }),
    );
  });

  it("simulates 2,000 VMs under every compared configuration", () => {
    const cluster = randomCluster(2_000, { vms: 2_000 });
    const rows = compareOrders(cluster);
    const row = (order: RestoreOrder, hold: boolean) =>
      rows.find((r) => r.order === order && r.hold === hold);
    assert.equal(row("restore-line", true)?.retransmissions, 0);
    assert.ok((row("restore-line", true)?.maxBackoffMs ?? Infinity) <= 0.1 + EPSILON);
    assert.ok((row("as-ready", false)?.maxBackoffMs ?? 0) >= 200);
    assert.ok((row("simultaneous", false)?.maxBackoffMs ?? Infinity) <= 200.1 + EPSILON);
  });
});
