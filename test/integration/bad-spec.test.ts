import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Lab } from "./fixture.ts";

describe("a bad spec is refused without starting anything", () => {
  let lab: Lab;
  before(async () => {
    lab = await Lab.create();
  });
  after(async () => {
    await lab.cleanup();
  });

  const cases: [string, unknown, RegExp][] = [
    [
      "duplicate names",
      {
        name: "x",
        vms: [
          { name: "a", memoryMiB: 128 },
          { name: "a", memoryMiB: 128 },
        ],
      },
      /vms\[1\]\.name: duplicate name 'a'/,
    ],
    [
      "unknown peer",
      { name: "x", vms: [{ name: "a", memoryMiB: 128, workload: { kind: "tcp-stream", to: "b", port: 1 } }] },
      /vms\[0\]\.workload\.to: unknown peer 'b'/,
    ],
    ["bad name", { name: "x", vms: [{ name: "a$(reboot)", memoryMiB: 128 }] }, /vms\[0\]\.name/],
    ["memory too small", { name: "x", vms: [{ name: "a", memoryMiB: 8 }] }, /vms\[0\]\.memoryMiB/],
  ];
  for (const [what, spec, message] of cases) {
    it(`refuses ${what}`, async () => {
      const result = await lab.cli(["up", await lab.writeSpec(spec)]);
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, message);
      assert.match(result.stderr, /nothing was started/);
      assert.equal(existsSync(join(lab.home, "daemon.sock")), false, "no daemon was started");
      assert.deepEqual(await lab.processes(), []);
    });
  }

  it("refuses a file that is not JSON", async () => {
    const result = await lab.cli(["up", join(lab.home, "missing.json")]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /missing\.json/);
  });

  it("status and down without a cluster say so", async () => {
    const status = await lab.cli(["status", "--json"]);
    assert.equal(status.code, 0);
    assert.deepEqual(JSON.parse(status.stdout), { cluster: null, accel: null, vms: [], traffic: [] });
    const exec = await lab.cli(["exec", "a", "--", "true"]);
    assert.equal(exec.code, 1);
    assert.match(exec.stderr, /no cluster is running/);
  });
});
