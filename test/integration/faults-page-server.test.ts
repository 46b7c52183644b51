import assert from "node:assert/strict";
import { after, before, describe, it, type TestContext } from "node:test";
import { Lab } from "./fixture.ts";
import {
  assertNothingLeft,
  assertVerified,
  faultInjected,
  killPid,
  qemuOf,
  startCli,
  waitForLog,
  waitGone,
} from "./faults-fixture.ts";

/**
 * Issue 4 (safety) and issue 7 (fault injection): a page server that stalls, a store read that
 * hangs, a daemon whose event loop is wedged, and a destination QEMU killed, each mid-restore.
 * The destination QEMU must be stopped within a bound and the error must name the VM. The bounds
 * are shortened for the test through HOTRESTORE_FAULT's knobs (the defaults are 30 s each):
 * the page server's stall timeout and the daemon supervisor's loop timeout, both BOUND_MS here.
 * What is asserted is the issue's own bound: fault → destination QEMU gone within BOUND_MS plus a
 * wide MARGIN_MS (check intervals, `quit`, a loaded 2-core machine); the figures are printed.
 */
const BOUND_MS = 3_000;
const MARGIN_MS = 12_000;

describe("a page server that dies or stalls mid-restore", () => {
  let lab: Lab;

  before(async () => {
    lab = await Lab.create("hr-faults-ps-");
    const spec = await lab.writeSpec({
      name: "pages",
      vms: [{ name: "b", memoryMiB: 128 }],
    });
    const up = await lab.cli(["up", spec]);
    assert.equal(up.code, 0, up.stderr);
    const snap = await lab.cli(["snapshot", "--name", "s1"]);
    assert.equal(snap.code, 0, snap.stderr);
    const down = await lab.cli(["down"]);
    assert.equal(down.code, 0, down.stderr);
    await assertNothingLeft(lab);
  });
  after(async () => {
    await lab.cleanup();
  });

  /** Restores s1 with `fault`; returns the CLI's stderr and fault → b's destination gone, ms. */
  async function faultyRestore(fault: string, t: TestContext): Promise<{ stderr: string; ms: number }> {
    const since = Date.now();
    // The faults are the page server's: hotrestore on it, not on kernel paging.
    const run = startCli(lab, ["restore", "s1", "--paging", "page-server"], { HOTRESTORE_FAULT: fault });
    const injected = await waitForLog(lab, since, faultInjected("b"));
    const destination = await qemuOf(lab, "b", true);
    assert.ok(destination !== undefined, "b's destination QEMU runs when the fault hits");
    await waitGone(destination, BOUND_MS + 60_000);
    const ms = Date.now() - injected.time;
    const result = await run.done;
    assert.notEqual(result.code, 0, "the restore fails");
    t.diagnostic(`${fault}: destination stopped ${ms} ms after the fault; ${result.stderr.trim()}`);
    assert.ok(ms < BOUND_MS + MARGIN_MS, `destination stopped ${ms} ms after the fault`);
    await assertNothingLeft(lab);
    await assertVerified(lab, "s1");
    return { stderr: result.stderr, ms };
  }

  it("a stalled page server (reads and writes nothing) trips its watchdog", async (t) => {
    const fault = `page-server-stall:b@running,stall-timeout-ms=${BOUND_MS}`;
    const { stderr } = await faultyRestore(fault, t);
    assert.match(stderr, /VM b: lazy restore failed: page server: no progress for \d+ ms/);
  });

  it("a store read that hangs while the guest faults trips the watchdog", async (t) => {
    const fault = `store-read-hang:b@prefetch,stall-timeout-ms=${BOUND_MS}`;
    const { stderr } = await faultyRestore(fault, t);
    assert.match(stderr, /VM b: lazy restore failed: page server: (a page requested|no progress)/);
  });

  it("a wedged daemon (event loop blocked) is killed by its supervisor, and its QEMUs with it", async (t) => {
    const fault = `event-loop-block:b@running,loop-timeout-ms=${BOUND_MS}`;
    const { stderr } = await faultyRestore(fault, t);
    assert.match(stderr, /the daemon died during restore s1/);
    assert.match(
      stderr,
      /event loop was blocked for \d+ ms during restore s1 while serving pages of VM [^;]*\bb\b/,
    );
  });

  it("a destination QEMU killed mid-restore fails the restore naming its VM", async () => {
    const run = startCli(lab, ["restore", "s1"]);
    await run.waitFor(/^\s*ready b:/);
    killPid(await qemuOf(lab, "b", true));
    const result = await run.done;
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /VM b\b/);
    await assertNothingLeft(lab);
    await assertVerified(lab, "s1");
  });
});
