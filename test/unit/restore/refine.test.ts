import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { earlyFaultOrder, REFINE_WINDOW_MS } from "../../../src/restore/vm/lazy.ts";
import type { FaultRecord } from "../../../src/restore/vm/page-server-log.ts";

function fault(page: number, atUs: number): FaultRecord {
  return {
    atUs,
    blockId: "ram0",
    page,
    inFlight: false,
    alreadySent: false,
    serviceUs: 50,
    afterStart: true,
    servedBy: "now",
  };
}

describe("working-set refinement from the fault log", () => {
  it("keeps distinct pages in first-fault order up to REFINE_WINDOW_MS after start", () => {
    const start = 1_000_000;
    const late = start + REFINE_WINDOW_MS * 1000 + 1;
    const faults = [
      fault(7, start + 10),
      fault(3, start + 20),
      fault(7, start + 30),
      fault(9, late),
      fault(1, start + 40),
    ];
    assert.deepEqual(
      earlyFaultOrder(faults, start).map((ref) => ref.page),
      [7, 3, 1],
    );
  });

  it("keeps every fault when the VM never started", () => {
    assert.deepEqual(
      earlyFaultOrder([fault(2, 5), fault(4, 9e12)], undefined).map((ref) => ref.page),
      [2, 4],
    );
  });
});
