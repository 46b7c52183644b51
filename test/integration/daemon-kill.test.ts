import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { isAlive, Lab } from "./fixture.ts";

describe("kill -9 of the daemon leaves no QEMU behind", () => {
  let lab: Lab;
  before(async () => {
    lab = await Lab.create();
  });
  after(async () => {
    await lab.cleanup();
  });

  it("QEMU dies with the daemon", async () => {
    const spec = await lab.writeSpec({ name: "solo", vms: [{ name: "only", memoryMiB: 128 }] });
    const up = await lab.cli(["up", spec]);
    assert.equal(up.code, 0, up.stderr);
    const qemus = await lab.processes();
    assert.equal(qemus.length, 1, "one QEMU runs");
    const daemon = await lab.daemonPid();
    assert.ok(daemon !== undefined && isAlive(daemon));
    process.kill(daemon, "SIGKILL");
    assert.deepEqual(await lab.waitNoProcesses(10_000), [], "QEMU got the parent-death signal");
  });
});
