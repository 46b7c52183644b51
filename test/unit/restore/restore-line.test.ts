import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { condenseGraph } from "../../../src/restore/cluster/graph.ts";
import { planRestoreLine, type LineVm, type RestoreLine } from "../../../src/restore/cluster/restore-line.ts";
import { isHrError } from "../../../src/util/errors.ts";

type Edge = [from: string, to: string];

function vm(name: string, readyEstimateMs: number, extra: Partial<LineVm> = {}): LineVm {
  return { name, readyEstimateMs, workingSetPages: 10_000, pageCostMs: 0.1, w0Pages: 100, ...extra };
}

function plan(vms: LineVm[], edges: Edge[]): RestoreLine {
  const graph = condenseGraph(
    vms.map((entry) => entry.name),
    edges.map(([from, to]) => ({ from, to })),
  );
  return planRestoreLine({ graph, vms });
}

function rejects(run: () => unknown, code: string, pattern: RegExp): void {
  assert.throws(run, (error: unknown) => isHrError(error, code) && pattern.test(error.message));
}

describe("restore line", () => {
  it("starts a sender no earlier than the receivers it sends to", () => {
    // a sends to b, b sends to c: c first, then b, a waits for b.
    const line = plan(
      [vm("a", 100), vm("b", 300), vm("c", 50)],
      [
        ["a", "b"],
        ["b", "c"],
      ],
    );
    assert.deepEqual(line.startMs, { a: 300, b: 300, c: 50 });
    assert.deepEqual(line.slackMs, { a: 200, b: 0, c: 0 });
    assert.equal(line.clusterReadyMs, 300);
    assert.deepEqual(line.order, [["c"], ["b", "a"]]);
  });

  it("starts a strongly connected component at its slowest member's readiness", () => {
    const line = plan(
      [vm("x", 10), vm("y", 40), vm("z", 5)],
      [
        ["x", "y"],
        ["y", "x"],
        ["z", "x"],
      ],
    );
    assert.deepEqual(line.startMs, { x: 40, y: 40, z: 40 });
    assert.deepEqual(line.order, [["x", "y", "z"]]);
  });

  it("leaves independent VMs at their own readiness", () => {
    const line = plan([vm("p", 70), vm("q", 20), vm("r", 70)], []);
    assert.deepEqual(line.startMs, { p: 70, q: 20, r: 70 });
    assert.deepEqual(line.order, [["q"], ["p", "r"]]);
  });

  it("spends slack on a larger W0, capped at the working set", () => {
    const line = plan(
      [
        vm("fast", 0, { w0Pages: 100, pageCostMs: 0.1, workingSetPages: 10_000 }),
        vm("capped", 0, { w0Pages: 100, pageCostMs: 0.001, workingSetPages: 5_000 }),
        vm("free", 0, { w0Pages: 100, pageCostMs: 0, workingSetPages: 7_000 }),
        vm("slow", 500, { w0Pages: 100 }),
      ],
      [
        ["fast", "slow"],
        ["capped", "slow"],
        ["free", "slow"],
      ],
    );
    assert.deepEqual(line.w0, { fast: 100 + 5000, capped: 5_000, free: 7_000, slow: 100 });
  });

  it("never buys more pages than the slack pays for, and clamps a minimum W0 above the working set", () => {
    const line = plan(
      [
        vm("a", 0, { w0Pages: 0, pageCostMs: 0.1, workingSetPages: 100 }),
        vm("b", 0.3),
        vm("c", 0, { w0Pages: 50, workingSetPages: 20 }),
      ],
      [["a", "b"]],
    );
    // 0.3 / 0.1 is 2.9999999999999996 in floating point, and 3 × 0.1 is 0.30000000000000004 > 0.3.
    assert.equal(line.w0.a, 2);
    assert.equal(line.w0.c, 20);
    assert.equal(plan([vm("d", 5, { w0Pages: undefined })], []).w0.d, 0);
  });

  it("plans an empty cluster", () => {
    assert.deepEqual(plan([], []), { startMs: {}, w0: {}, slackMs: {}, clusterReadyMs: 0, order: [] });
  });

  it("plans straight from a condensation given by component indices", () => {
    const line = planRestoreLine({
      graph: {
        components: [["b"], ["a"]],
        condensation: {
          edges: [
            { from: 1, to: 0 },
            { from: 1, to: 0 },
          ],
        },
      },
      vms: [vm("a", 1), vm("b", 9)],
    });
    assert.deepEqual(line.startMs, { a: 9, b: 9 });
  });
});

describe("restore line: bad input fails with a clear error", () => {
  const graph = { components: [["a"], ["b"]], condensation: { edges: [{ from: 0, to: 1 }] } };

  it("rejects VMs and components that do not match", () => {
    rejects(
      () => planRestoreLine({ graph, vms: [vm("a", 1)] }),
      "RESTORE_LINE_INVALID_INPUT",
      /VM b.*not listed/,
    );
    rejects(
      () => planRestoreLine({ graph, vms: [vm("a", 1), vm("b", 1), vm("c", 1)] }),
      "RESTORE_LINE_INVALID_INPUT",
      /VM c is in no component/,
    );
    rejects(
      () =>
        planRestoreLine({
          graph: { ...graph, components: [["a"], ["a", "b"]] },
          vms: [vm("a", 1), vm("b", 1)],
        }),
      "RESTORE_LINE_INVALID_INPUT",
      /VM a is in two components/,
    );
    rejects(
      () => planRestoreLine({ graph, vms: [vm("a", 1), vm("b", 1), vm("a", 2)] }),
      "RESTORE_LINE_INVALID_INPUT",
      /VM a is listed twice/,
    );
  });

  it("rejects bad figures and edges to missing components", () => {
    for (const bad of [
      { readyEstimateMs: Number.NaN },
      { readyEstimateMs: -1 },
      { pageCostMs: Infinity },
      { workingSetPages: 1.5 },
      { w0Pages: -3 },
    ]) {
      rejects(
        () => planRestoreLine({ graph, vms: [vm("a", 1, bad), vm("b", 1)] }),
        "RESTORE_LINE_INVALID_INPUT",
        /VM a: \w+ must be/,
      );
    }
    rejects(
      () =>
        planRestoreLine({
          graph: { ...graph, condensation: { edges: [{ from: 0, to: 2 }] } },
          vms: [vm("a", 1), vm("b", 1)],
        }),
      "RESTORE_LINE_INVALID_INPUT",
      /edge 0→2/,
    );
  });

  it("rejects a graph that was not condensed", () => {
    const cyclic = {
      components: [["a"], ["b"], ["c"]],
      condensation: {
        edges: [
          { from: 0, to: 1 },
          { from: 1, to: 0 },
          { from: 2, to: 0 },
        ],
      },
    };
    rejects(
      () => planRestoreLine({ graph: cyclic, vms: [vm("a", 1), vm("b", 1), vm("c", 1)] }),
      "RESTORE_LINE_CYCLE",
      /\[a\], \[b\], \[c\] are on or lead to a cycle/,
    );
  });
});
