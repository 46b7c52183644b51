import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Lab } from "./fixture.ts";
import {
  assertNothingLeft,
  assertRunning,
  assertVerified,
  faultInjected,
  killPid,
  snapshotNames,
  startCli,
  tempDirs,
  waitForLog,
  upWithSnapshot,
} from "./faults-fixture.ts";

/**
 * Issue 7, fault injection: the daemon killed (`kill -9`) during a snapshot, during a restore's
 * prefetch, and after some VMs of a restore started. Each time: every QEMU dies with it, the CLI
 * says the daemon died and during what, earlier snapshots verify, no half snapshot is listed, and
 * a later restore brings the whole cluster back. Faults are timed on the daemon's own progress
 * notes and log, and on HOTRESTORE_FAULT holding a page server still (util/faults.ts).
 */
describe("the daemon killed mid-operation", () => {
  let lab: Lab;
  // b's page server stops after W0, before the device state: a restore that waits there.
  const holdB = { HOTRESTORE_FAULT: "page-server-stall:b@prefetch" };

  before(async () => {
    lab = await Lab.create("hr-faults-daemon-");
    await upWithSnapshot(lab, "faults");
  });
  after(async () => {
    await lab.cleanup();
  });

  it("during a snapshot: no half snapshot listed, the earlier one intact, every QEMU gone", async () => {
    const daemon = await lab.daemonPid();
    const run = startCli(lab, ["snapshot", "--name", "s2"]);
    await run.waitFor(/^\s*resumed:/); // memory is streaming into the store
    killPid(daemon);
    const result = await run.done;
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /the daemon died during snapshot s2 \(last step: resumed\)/);
    await assertNothingLeft(lab);
    assert.deepEqual(await snapshotNames(lab), ["s1"]);
    await assertVerified(lab, "s1");
  });

  it("during a restore's prefetch (a page server sending W0)", async () => {
    const since = Date.now();
    const run = startCli(lab, ["restore", "s1", "--paging", "page-server"], holdB);
    await waitForLog(lab, since, faultInjected("b"));
    killPid(await lab.daemonPid());
    const result = await run.done;
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /the daemon died during restore s1/);
    await assertNothingLeft(lab);
    await assertVerified(lab, "s1");
  });

  it("after some VMs started (as-ready: a runs, b still loading)", async () => {
    const run = startCli(lab, ["restore", "s1", "--order", "as-ready", "--paging", "page-server"], holdB);
    await run.waitFor(/^\s*started a:/);
    killPid(await lab.daemonPid());
    const result = await run.done;
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /the daemon died during restore s1 \(last step: started VM a\)/);
    await assertNothingLeft(lab);
    await assertVerified(lab, "s1");
  });

  it("afterwards a restore brings the whole cluster back, and the next snapshot clears the debris", async () => {
    const restore = await lab.cli(["restore", "s1"]);
    assert.equal(restore.code, 0, restore.stderr);
    await assertRunning(lab, ["a", "b"]);
    assert.ok((await tempDirs(lab)).length > 0, "the killed snapshot left its temporary directory");
    const snap = await lab.cli(["snapshot", "--name", "s3"]);
    assert.equal(snap.code, 0, snap.stderr);
    assert.deepEqual(await tempDirs(lab), [], "stale temporary directories removed");
    assert.deepEqual(await snapshotNames(lab), ["s1", "s3"]);
    const down = await lab.cli(["down"]);
    assert.equal(down.code, 0, down.stderr);
    await assertNothingLeft(lab);
  });
});
