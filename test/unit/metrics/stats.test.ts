import assert from "node:assert/strict";
import { it } from "node:test";
import { median, quantile } from "../../../src/metrics/stats.ts";

it("median and quantiles interpolate between samples", () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 2, 3]), 2.5);
  assert.equal(quantile([10, 20, 30, 40, 50], 0.99), 49.6);
  assert.ok(Number.isNaN(median([])));
});
