import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseFaults } from "../../../src/util/faults.ts";

describe("HOTRESTORE_FAULT parsing", () => {
  it("is empty (inert) when the variable is unset or blank", () => {
    assert.deepEqual(parseFaults(undefined), { faults: [], knobs: {} });
    assert.deepEqual(parseFaults(" "), { faults: [], knobs: {} });
  });

  it("reads faults and knobs", () => {
    assert.deepEqual(
      parseFaults("page-server-stall:b@running, stall-timeout-ms=3000,store-read-hang:db-1@prefetch"),
      {
        faults: [
          { kind: "page-server-stall", vm: "b", point: "running" },
          { kind: "store-read-hang", vm: "db-1", point: "prefetch" },
        ],
        knobs: { "stall-timeout-ms": 3000 },
      },
    );
  });

  it("refuses what it cannot read, so a typo does not pass as no fault", () => {
    for (const text of ["page-server-stal:b@running", "page-server-stall:b", "stall-timeout=5", "x=1"]) {
      assert.throws(() => parseFaults(text), /HOTRESTORE_FAULT: cannot read/);
    }
  });
});
