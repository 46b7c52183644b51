/** Working-set refinement (merge of a fault order) and accuracy figures. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { FaultRecord } from "../../../src/restore/vm/page-server-log.ts";
import { mergeFaultOrder, workingSetAccuracy } from "../../../src/restore/vm/postcopy-working-set.ts";

const ref = (page: number, blockId = "ram0"): { blockId: string; page: number } => ({ blockId, page });
const pages = (refs: { blockId: string; page: number }[]): string[] =>
  refs.map((r) => `${r.blockId}:${r.page}`);

function fault(page: number, atUs: number, blockId = "ram0"): FaultRecord {
  return {
    atUs,
    blockId,
    page,
    inFlight: false,
    alreadySent: false,
    serviceUs: 10,
    afterStart: true,
    servedBy: "now",
  };
}

void describe("mergeFaultOrder", () => {
  void it("after a lazy restore: the faults in order, then the old entries that did not fault", () => {
    const merged = mergeFaultOrder([ref(1), ref(2), ref(3)], [ref(9), ref(2), ref(7), ref(9)], {
      prefetched: 0,
    });
    assert.deepEqual(pages(merged), ["ram0:9", "ram0:2", "ram0:7", "ram0:1", "ram0:3"]);
  });

  void it("after a prefetching restore: the prefetched part first, then the misses, then the rest", () => {
    const merged = mergeFaultOrder([ref(1), ref(2), ref(3), ref(4)], [ref(8), ref(3, "rom")], {
      prefetched: 2,
    });
    assert.deepEqual(pages(merged), ["ram0:1", "ram0:2", "ram0:8", "rom:3", "ram0:3", "ram0:4"]);
  });

  void it("caps the result, handles empty inputs, and keeps blocks apart", () => {
    assert.deepEqual(mergeFaultOrder([], [], { prefetched: 0 }), []);
    const capped = mergeFaultOrder([ref(1)], [ref(5), ref(6)], { prefetched: 0, maxPages: 2 });
    assert.deepEqual(pages(capped), ["ram0:5", "ram0:6"]);
    const prefetchedTooMany = mergeFaultOrder([ref(1)], [ref(1, "rom")], { prefetched: 5 });
    assert.deepEqual(pages(prefetchedTooMany), ["ram0:1", "rom:1"]);
  });
});

void describe("workingSetAccuracy", () => {
  const ws = [ref(1), ref(2), ref(3), ref(4)];

  void it("lazy: recall over faults in the window, waste over the whole restore", () => {
    const faults = [fault(1, 1_000), fault(9, 2_000), fault(2, 3_000), fault(1, 3_500), fault(3, 9_000_000)];
    const accuracy = workingSetAccuracy(ws, faults, { prefetched: 0, startedAtUs: 0, windowMs: 1_000 });
    assert.equal(accuracy.faulted, 3, "page 3 faulted after the window");
    assert.equal(accuracy.hits, 2);
    assert.equal(accuracy.misses, 1);
    assert.equal(accuracy.recall, 2 / 3);
    assert.equal(accuracy.waste, 1 / 4, "page 4 never faulted");
    assert.equal(accuracy.basis, "faults");
  });

  void it("prefetching: prefetched pages count as needed (upper bound); waste is not observable", () => {
    const faults = [fault(9, 1_000), fault(4, 2_000)];
    const accuracy = workingSetAccuracy(ws, faults, { prefetched: 3, startedAtUs: 0, windowMs: 1_000 });
    assert.equal(accuracy.recall, (3 + 1) / (3 + 1 + 1));
    assert.equal(accuracy.waste, null);
    assert.equal(accuracy.basis, "prefetch-upper-bound");
  });

  void it("no faults and no working set give null, not NaN", () => {
    const accuracy = workingSetAccuracy([], [], { prefetched: 0, startedAtUs: undefined, windowMs: 1_000 });
    assert.equal(accuracy.recall, null);
    assert.equal(accuracy.waste, null);
  });
});
