import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { condenseGraph } from "../../../src/restore/cluster/graph.ts";
import { planRestoreLine, type LineVm, type RestoreLine } from "../../../src/restore/cluster/restore-line.ts";

/**
 * Property-based tests of the restore line over random graphs and readiness estimates. The
 * checks use the raw VM-level edges and a brute-force reachability, never the code under test's
 * own condensation, so a wrong SCC would show up here too.
 */
interface Case {
  vms: LineVm[];
  /** Edges as VM indices: from sends to `to`. */
  edges: [number, number][];
}

const name = (index: number): string => `vm${index}`;

/** A VM's figures; `w0Pages` may exceed the working set (the plan clamps it) or be absent. */
const figuresArbitrary = (ready: fc.Arbitrary<number>): fc.Arbitrary<Omit<LineVm, "name">> =>
  fc.record(
    {
      readyEstimateMs: ready,
      w0Pages: fc.nat(1_200),
      workingSetPages: fc.nat(1_000),
      pageCostMs: fc.oneof(fc.constant(0), fc.double({ min: 0.001, max: 20, noNaN: true })),
    },
    { requiredKeys: ["readyEstimateMs", "workingSetPages", "pageCostMs"] },
  );

/** Any directed graph (cycles allowed), or a DAG (edges only from a lower to a higher rank). */
function caseArbitrary(options: {
  maxVms: number;
  dag: boolean;
  ready: fc.Arbitrary<number>;
}): fc.Arbitrary<Case> {
  return fc.integer({ min: 1, max: options.maxVms }).chain((count) =>
    fc.record({
      vms: fc
        .array(figuresArbitrary(options.ready), { minLength: count, maxLength: count })
        .map((figures) => figures.map((entry, index) => ({ name: name(index), ...entry }))),
      edges: fc
        .array(fc.tuple(fc.nat(count - 1), fc.nat(count - 1)), { maxLength: count * 3 })
        .map((pairs) =>
          options.dag ? pairs.filter(([from, to]) => from < to) : pairs.filter(([from, to]) => from !== to),
        ),
    }),
  );
}

function planCase(testCase: Case): RestoreLine {
  const graph = condenseGraph(
    testCase.vms.map((entry) => entry.name),
    testCase.edges.map(([from, to]) => ({ from: name(from), to: name(to) })),
  );
  return planRestoreLine({ graph, vms: testCase.vms });
}

function reachability(count: number, edges: [number, number][]): boolean[][] {
  const reach = Array.from({ length: count }, (_, i) => Array.from({ length: count }, (__, j) => i === j));
  for (const [from, to] of edges) (reach[from] ?? [])[to] = true;
  for (let via = 0; via < count; via += 1)
    for (let i = 0; i < count; i += 1)
      for (let j = 0; j < count; j += 1)
        if (reach[i]?.[via] === true && reach[via]?.[j] === true) (reach[i] ?? [])[j] = true;
  return reach;
}

function checkConstraints(testCase: Case, line: RestoreLine): void {
  const { vms, edges } = testCase;
  const start = (index: number): number => line.startMs[name(index)] ?? Number.NaN;
  for (const [from, to] of edges) assert.ok(start(to) <= start(from), `receiver ${to} after sender ${from}`);
  const reach = reachability(vms.length, edges);
  vms.forEach((entry, i) => {
    vms.forEach((_, j) => {
      if (reach[i]?.[j] === true && reach[j]?.[i] === true) assert.equal(start(i), start(j));
    });
    const at = start(i);
    assert.ok(at >= entry.readyEstimateMs, `${entry.name} starts before it is ready`);
    const slack = line.slackMs[entry.name] ?? Number.NaN;
    assert.equal(slack, at - entry.readyEstimateMs);
    const minimum = Math.min(entry.w0Pages ?? 0, entry.workingSetPages);
    const w0 = line.w0[entry.name] ?? Number.NaN;
    assert.ok(Number.isInteger(w0) && w0 >= minimum && w0 <= entry.workingSetPages, `w0 ${w0} out of range`);
    assert.ok((w0 - minimum) * entry.pageCostMs <= slack * (1 + 1e-12), "prefetch overruns the slack");
  });
  assert.equal(line.clusterReadyMs, Math.max(0, ...vms.map((_, i) => start(i))));

  const flat = line.order.flat();
  assert.deepEqual([...flat].sort(), vms.map((entry) => entry.name).sort());
  const groupStarts = line.order.map((group) => line.startMs[group[0] ?? ""] ?? Number.NaN);
  groupStarts.forEach((at, index) => {
    assert.ok(index === 0 || at > (groupStarts[index - 1] ?? Infinity), "groups not in time order");
    for (const member of line.order[index] ?? []) assert.equal(line.startMs[member], at);
  });
  const position = new Map(flat.map((member, index) => [member, index]));
  for (const [from, to] of edges) {
    const mutual = reach[to]?.[from] === true;
    if (!mutual)
      assert.ok((position.get(name(to)) ?? 0) < (position.get(name(from)) ?? 0), "sender listed first");
  }
}

const anyReadiness = fc.double({ min: 0, max: 100_000, noNaN: true });

describe("restore line properties", () => {
  it("random DAGs: every constraint holds", () => {
    fc.assert(
      fc.property(caseArbitrary({ maxVms: 30, dag: true, ready: anyReadiness }), (testCase) => {
        checkConstraints(testCase, planCase(testCase));
      }),
      { numRuns: 300 },
    );
  });

  it("random graphs with cycles: every constraint holds", () => {
    fc.assert(
      fc.property(caseArbitrary({ maxVms: 30, dag: false, ready: anyReadiness }), (testCase) => {
        checkConstraints(testCase, planCase(testCase));
      }),
      { numRuns: 300 },
    );
  });

  it("does not depend on the order of the VM list or the edges", () => {
    fc.assert(
      fc.property(caseArbitrary({ maxVms: 12, dag: false, ready: anyReadiness }), (testCase) => {
        const reversed = { vms: [...testCase.vms].reverse(), edges: [...testCase.edges].reverse() };
        const line = planCase(testCase);
        const again = planCase(reversed);
        assert.deepEqual(again.startMs, line.startMs);
        assert.deepEqual(again.w0, line.w0);
        assert.deepEqual(
          again.order.map((group) => [...group].sort()),
          line.order.map((group) => [...group].sort()),
        );
      }),
      { numRuns: 200 },
    );
  });

  it("small graphs, exhaustive: no feasible schedule is earlier, ours is the pointwise earliest", () => {
    // Readiness on the grid {0..3}. Any feasible real-valued schedule rounded up to integers stays
    // feasible (every constraint is ≤ between starts or ≥ an integer), and never starts later than
    // max readiness is needed, so enumerating {0..3}^n covers every schedule that could beat ours.
    const GRID = 4;
    const small = caseArbitrary({ maxVms: 6, dag: false, ready: fc.integer({ min: 0, max: GRID - 1 }) });
    const smallDag = caseArbitrary({ maxVms: 6, dag: true, ready: fc.integer({ min: 0, max: GRID - 1 }) });
    fc.assert(
      fc.property(fc.oneof(small, smallDag), (testCase) => {
        const line = planCase(testCase);
        const ours = testCase.vms.map((entry) => line.startMs[entry.name] ?? Number.NaN);
        const count = ours.length;
        let feasibleSchedules = 0;
        const schedule = new Array<number>(count).fill(0);
        for (let code = 0; code < GRID ** count; code += 1) {
          for (let i = 0, rest = code; i < count; i += 1, rest = Math.floor(rest / GRID))
            schedule[i] = rest % GRID;
          const at = (index: number): number => schedule[index] ?? 0;
          const feasible =
            testCase.vms.every((entry, i) => at(i) >= entry.readyEstimateMs) &&
            testCase.edges.every(([from, to]) => at(to) <= at(from));
          if (!feasible) continue;
          feasibleSchedules += 1;
          assert.ok(Math.max(...schedule) >= line.clusterReadyMs, `earlier schedule ${schedule.join(",")}`);
          ours.forEach((mine, i) =>
            assert.ok(mine <= at(i), `schedule ${schedule.join(",")} starts vm${i} earlier`),
          );
        }
        assert.ok(feasibleSchedules > 0);
        assert.ok(
          ours.every((at) => Number.isInteger(at) && at < GRID),
          "ours lies on the grid, so it is among the enumerated",
        );
      }),
      { numRuns: 300 },
    );
  });
});
