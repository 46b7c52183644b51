/**
 * The simulator run on real restores (the demo fixture: full/as-ready and hotrestore/restore-line
 * on TCG guests): same readiness, flows, order and hold in, a prediction per flow out.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { simulateReal } from "../../../src/sim/versus-real.ts";
import { demoFixture } from "../report/fixtures.ts";

describe("simulator vs real restores", () => {
  it("starts as-ready VMs at their measured readiness and predicts each flow's backoff", async () => {
    const data = await demoFixture();
    const run = data.runs.find((r) => r.report.order === "as-ready");
    assert.ok(run);
    const versus = simulateReal(run.report);
    assert.equal(versus.flows.length, run.report.backoff.flows.length);
    for (const vm of run.report.vms) {
      // as-ready: the prediction starts each VM at its readiness; the real one a few ms later.
      assert.ok(
        Math.abs(versus.startErrorMs[vm.name] ?? Infinity) <= Math.max(50, vm.startedMs - vm.readyMs),
      );
    }
    versus.flows.forEach((flow, i) => {
      assert.equal(flow.measuredMs, run.report.backoff.flows[i]?.ms ?? null);
      assert.ok(flow.predictedMs >= 0);
    });
  });

  it("predicts no backoff under restore-line with hold, whatever the guests measured", async () => {
    const data = await demoFixture();
    const run = data.runs.find((r) => r.report.order === "restore-line" && r.report.hold);
    assert.ok(run);
    const versus = simulateReal(run.report);
    assert.equal(versus.predictedMaxMs, 0);
    assert.equal(versus.measuredMaxMs, run.report.backoff.maxMs);
  });
});
