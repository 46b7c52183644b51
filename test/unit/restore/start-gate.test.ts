/** When each VM of a cluster restore may start, under every order. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { condenseGraph } from "../../../src/restore/cluster/graph.ts";
import type { CondensedGraph } from "../../../src/restore/cluster/line-input.ts";
import { ORDERS, StartGate, type Order } from "../../../src/restore/cluster/start-gate.ts";

/** A graph over `vms` where each [from, to] pair means "from sends to to". */
function graphOf(vms: readonly string[], edges: readonly [string, string][]): CondensedGraph {
  return condenseGraph(
    vms,
    edges.map(([from, to]) => ({ from, to })),
  );
}

const sorted = (vms: readonly string[]): string[] => [...vms].sort();

describe("start gate: as-ready", () => {
  it("releases each VM on its own readiness, whatever it sends to", () => {
    const gate = new StartGate("as-ready", ["a", "b"], graphOf(["a", "b"], [["a", "b"]]));
    assert.deepEqual(gate.ready("a"), ["a"]);
    assert.deepEqual(gate.started("a"), []);
    assert.deepEqual(gate.ready("b"), ["b"]);
    assert.deepEqual(gate.started("b"), []);
  });
});

describe("start gate: simultaneous", () => {
  it("releases every VM at once, only when all are ready", () => {
    const gate = new StartGate("simultaneous", ["a", "b", "c"], graphOf(["a", "b", "c"], [["a", "b"]]));
    assert.deepEqual(gate.ready("c"), []);
    assert.deepEqual(gate.ready("a"), []);
    assert.deepEqual(sorted(gate.ready("b")), ["a", "b", "c"]);
    assert.deepEqual(gate.started("a"), []);
  });

  it("waits for a VM the graph does not know", () => {
    const gate = new StartGate("simultaneous", ["a", "b", "x"], graphOf(["a", "b"], [["a", "b"]]));
    assert.deepEqual(gate.ready("a"), []);
    assert.deepEqual(gate.ready("b"), []);
    assert.deepEqual(sorted(gate.ready("x")), ["a", "b", "x"]);
  });
});

describe("start gate: restore-line", () => {
  it("releases a receiver when it is ready and its sender only after the receiver started", () => {
    const gate = new StartGate("restore-line", ["a", "b"], graphOf(["a", "b"], [["a", "b"]]));
    assert.deepEqual(gate.ready("a"), []);
    assert.deepEqual(gate.ready("b"), ["b"]);
    assert.deepEqual(gate.started("b"), ["a"]);
    assert.deepEqual(gate.started("a"), []);
  });

  it("holds a ready sender until its receiver started, not merely released", () => {
    const gate = new StartGate("restore-line", ["a", "b"], graphOf(["a", "b"], [["a", "b"]]));
    assert.deepEqual(gate.ready("b"), ["b"]);
    assert.deepEqual(gate.ready("a"), []);
    assert.deepEqual(gate.started("b"), ["a"]);
  });

  it("takes a hand-built condensation: components sinks first, edges sender → receiver", () => {
    const graph: CondensedGraph = {
      components: [["b"], ["a"]],
      condensation: { edges: [{ from: 1, to: 0 }] },
    };
    const gate = new StartGate("restore-line", ["a", "b"], graph);
    assert.deepEqual(gate.ready("a"), []);
    assert.deepEqual(gate.ready("b"), ["b"]);
    assert.deepEqual(gate.started("b"), ["a"]);
  });

  it("starts a chain from its end: c, then b, then a", () => {
    const gate = new StartGate(
      "restore-line",
      ["a", "b", "c"],
      graphOf(
        ["a", "b", "c"],
        [
          ["a", "b"],
          ["b", "c"],
        ],
      ),
    );
    assert.deepEqual(gate.ready("a"), []);
    assert.deepEqual(gate.ready("b"), []);
    assert.deepEqual(gate.ready("c"), ["c"]);
    assert.deepEqual(gate.started("c"), ["b"]);
    assert.deepEqual(gate.started("b"), ["a"]);
  });

  it("releases the members of a 2-cycle together once both are ready", () => {
    const vms = ["a", "b", "c"];
    const gate = new StartGate(
      "restore-line",
      vms,
      graphOf(vms, [
        ["a", "b"],
        ["b", "a"],
        ["c", "a"],
      ]),
    );
    assert.deepEqual(gate.ready("a"), []);
    assert.deepEqual(gate.ready("c"), []);
    assert.deepEqual(sorted(gate.ready("b")), ["a", "b"]);
    assert.deepEqual(gate.started("a"), [], "c waits for the whole cycle to run");
    assert.deepEqual(gate.started("b"), ["c"]);
  });

  it("starts a VM unknown to the graph on its own readiness", () => {
    const gate = new StartGate("restore-line", ["a", "b", "x"], graphOf(["a", "b"], [["a", "b"]]));
    assert.deepEqual(gate.ready("x"), ["x"]);
    assert.deepEqual(gate.started("x"), []);
    assert.deepEqual(gate.ready("a"), []);
  });

  it("releases independent VMs as each becomes ready", () => {
    const gate = new StartGate("restore-line", ["a", "b"], graphOf(["a", "b"], []));
    assert.deepEqual(gate.ready("b"), ["b"]);
    assert.deepEqual(gate.ready("a"), ["a"]);
  });
});

describe("start gate: every order", () => {
  for (const order of ORDERS) {
    it(`${order}: never releases a VM twice, even on repeated events`, () => {
      const vms = ["a", "b", "c"];
      const gate = new StartGate(
        order,
        vms,
        graphOf(vms, [
          ["a", "b"],
          ["b", "a"],
          ["c", "b"],
        ]),
      );
      const released: string[] = [];
      for (const vm of ["a", "a", "b", "c", "b", "c"]) {
        released.push(...gate.ready(vm));
        for (const again of [...released]) released.push(...gate.started(again));
      }
      for (const vm of vms) released.push(...gate.ready(vm), ...gate.started(vm));
      assert.deepEqual(sorted(released), vms);
    });
  }
});

interface Replay {
  batches: string[][];
  readyAt: Map<string, number>;
  releasedAt: Map<string, number>;
  startedAt: Map<string, number>;
}

/** Replays readiness in the given order; every released VM is started at once. Steps count time. */
function replay(gate: StartGate, readyOrder: readonly string[]): Replay {
  const result: Replay = { batches: [], readyAt: new Map(), releasedAt: new Map(), startedAt: new Map() };
  let step = 0;
  const pending: string[] = [];
  const release = (vms: string[]): void => {
    if (vms.length === 0) return;
    result.batches.push(vms);
    for (const vm of vms) {
      assert.ok(!result.releasedAt.has(vm), `${vm} released twice`);
      result.releasedAt.set(vm, step);
      pending.push(vm);
    }
    step += 1;
  };
  for (const vm of readyOrder) {
    result.readyAt.set(vm, step);
    step += 1;
    release(gate.ready(vm));
    for (let next = pending.shift(); next !== undefined; next = pending.shift()) {
      result.startedAt.set(next, step);
      step += 1;
      release(gate.started(next));
    }
  }
  return result;
}

interface GraphCase {
  vms: string[];
  edges: [string, string][];
  readyOrder: string[];
}

function graphCase(dag: boolean): fc.Arbitrary<GraphCase> {
  return fc.integer({ min: 1, max: 12 }).chain((count) => {
    const vms = Array.from({ length: count }, (_, i) => `vm${i}`);
    return fc.record({
      vms: fc.constant(vms),
      edges: fc
        .array(fc.tuple(fc.nat(count - 1), fc.nat(count - 1)), { maxLength: count * 3 })
        .map((pairs) =>
          pairs
            .filter(([from, to]) => (dag ? from < to : from !== to))
            .map(([from, to]): [string, string] => [`vm${from}`, `vm${to}`]),
        ),
      readyOrder: fc.shuffledSubarray(vms, { minLength: count, maxLength: count }),
    });
  });
}

function checkEveryOrder(testCase: GraphCase, order: Order): Replay {
  const gate = new StartGate(order, testCase.vms, graphOf(testCase.vms, testCase.edges));
  const run = replay(gate, testCase.readyOrder);
  assert.deepEqual(sorted([...run.releasedAt.keys()]), sorted(testCase.vms), "every VM released once");
  for (const vm of testCase.vms) {
    assert.ok((run.releasedAt.get(vm) ?? -1) > (run.readyAt.get(vm) ?? Infinity), `${vm} released unready`);
  }
  if (order === "simultaneous") assert.equal(run.batches.length, 1);
  if (order === "as-ready") assert.ok(run.batches.every((batch) => batch.length === 1));
  return run;
}

describe("start gate properties", () => {
  it("random DAGs: every VM released exactly once; restore-line starts receivers before senders", () => {
    fc.assert(
      fc.property(graphCase(true), fc.constantFrom(...ORDERS), (testCase, order) => {
        const run = checkEveryOrder(testCase, order);
        if (order !== "restore-line") return;
        for (const [from, to] of testCase.edges) {
          const receiverStarted = run.startedAt.get(to) ?? Infinity;
          assert.ok(receiverStarted < (run.releasedAt.get(from) ?? -1), `${from} released before ${to} ran`);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("random graphs with cycles: a component is released in one batch, after its receivers started", () => {
    fc.assert(
      fc.property(graphCase(false), (testCase) => {
        const run = checkEveryOrder(testCase, "restore-line");
        const graph = graphOf(testCase.vms, testCase.edges);
        for (const members of graph.components) {
          assert.equal(new Set(members.map((vm) => run.releasedAt.get(vm))).size, 1, "cycle split");
        }
        for (const edge of graph.condensation.edges) {
          const senders = graph.components[edge.from] ?? [];
          const receivers = graph.components[edge.to] ?? [];
          const lastReceiver = Math.max(...receivers.map((vm) => run.startedAt.get(vm) ?? Infinity));
          for (const vm of senders) assert.ok(lastReceiver < (run.releasedAt.get(vm) ?? -1));
        }
      }),
      { numRuns: 500 },
    );
  });
});
