import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, rm, statfs } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { connectDaemon } from "../../src/cli/daemon-client.ts";
import type { ActionInput } from "../../src/control/actions.ts";
import type { HrError } from "../../src/util/errors.ts";
import { Lab } from "./fixture.ts";
import {
  assertNothingLeft,
  assertRunning,
  assertVerified,
  killLab,
  killPid,
  qemuOf,
  snapshotNames,
  startCli,
  tempDirs,
  upWithSnapshot,
} from "./faults-fixture.ts";

const run = promisify(execFile);

/**
 * Issue 7, fault injection around snapshots, with the store on a small tmpfs (the daemon's store
 * is <HOTRESTORE_HOME>/snapshots: the tmpfs is mounted there before `up`, unmounted in `after`):
 * two operations requested at once (one proceeds, the other is refused: CONTROLLER_BUSY), the disk filling up mid-snapshot, and a VM's QEMU killed mid-snapshot. Each time the
 * earlier snapshot verifies, no half snapshot is listed, and the cluster runs (or is restored).
 */
describe("snapshots under faults (store on a small tmpfs)", () => {
  let lab: Lab;
  let store: string;
  let mounted = false;

  before(async () => {
    lab = await Lab.create("hr-faults-snap-");
    store = join(lab.home, "snapshots");
    await mkdir(store, { recursive: true });
    await run("mount", ["-t", "tmpfs", "-o", "size=400m,mode=0700", "tmpfs", store]);
    mounted = true;
    await upWithSnapshot(lab, "snaps");
  });
  after(async () => {
    await killLab(lab);
    if (mounted) await run("umount", [store]).catch(() => run("umount", ["-l", store]));
    await lab.cleanup();
  });

  /** Two requests written on one connection in the same tick: the daemon sees them at once. */
  async function atOnce(first: ActionInput, second: ActionInput): Promise<PromiseSettledResult<unknown>[]> {
    const connection = await connectDaemon(lab.home);
    assert.ok(connection, "the daemon runs");
    try {
      return await Promise.allSettled([connection.request(first), connection.request(second)]);
    } finally {
      connection.close();
    }
  }

  function assertBusy(result: PromiseSettledResult<unknown> | undefined, running: string): void {
    assert.equal(result?.status, "rejected", "the second request is refused");
    const error = result.reason as HrError;
    assert.equal(error.code, "CONTROLLER_BUSY");
    assert.match(error.message, new RegExp(`'${running}' is still running`));
  }

  it("two snapshots requested at once: one proceeds, the other is refused", async () => {
    const [first, second] = await atOnce({ type: "snapshot", name: "s2" }, { type: "snapshot", name: "s2b" });
    assert.equal(first?.status, "fulfilled", JSON.stringify(first));
    assertBusy(second, "snapshot");
    assert.deepEqual(await snapshotNames(lab), ["s1", "s2"]);
    await assertVerified(lab, "s2");
    assert.equal((await lab.cli(["snapshot", "rm", "s2"])).code, 0);
  });

  it("a restore and a snapshot requested at once, and a restore during a snapshot, are refused", async () => {
    const [restored, snapshot] = await atOnce(
      { type: "restore", name: "s1" },
      { type: "snapshot", name: "s3" },
    );
    assert.equal(restored?.status, "fulfilled", JSON.stringify(restored));
    assertBusy(snapshot, "restore");

    // Connected before the snapshot starts, so the restore reaches the daemon within ms of "cut":
    // a CLI started then took ~1 s, and on a tmpfs store the snapshot could be done by then.
    const connection = await connectDaemon(lab.home);
    assert.ok(connection, "the daemon runs");
    const snapping = startCli(lab, ["snapshot", "--name", "s3"]);
    try {
      await snapping.waitFor(/^\s*cut:/);
      const [refused] = await Promise.allSettled([connection.request({ type: "restore", name: "s1" })]);
      assertBusy(refused, "snapshot");
    } finally {
      connection.close();
    }
    const snapped = await snapping.done;
    assert.equal(snapped.code, 0, snapped.stderr);
    await assertVerified(lab, "s3");
    await assertVerified(lab, "s1");
    assert.equal((await lab.cli(["snapshot", "rm", "s3"])).code, 0);
    await assertRunning(lab, ["a", "b"]);
  });

  it("the disk filling up: a clear error naming the snapshot, nothing half written, the cluster running", async (t) => {
    const filler = join(store, ".filler"); // a dot: never taken for a snapshot
    const fs = await statfs(store);
    const free = fs.bavail * fs.bsize;
    await run("fallocate", ["-l", String(free - 40 * 1024 * 1024), filler]);
    try {
      const full = await lab.cli(["snapshot", "--name", "s4"]);
      assert.notEqual(full.code, 0);
      t.diagnostic(full.stderr.trim());
      assert.match(full.stderr, /snapshot s4/);
      assert.match(full.stderr, /no space left/);
      assert.deepEqual(await snapshotNames(lab), ["s1"]);
      assert.deepEqual(await tempDirs(lab), [], "the half snapshot was removed");
      await assertVerified(lab, "s1");
      await assertRunning(lab, ["a", "b"]);
    } finally {
      await rm(filler, { force: true });
    }
    // Nothing of the failed snapshot lingers in QEMU: the next one works.
    const again = await lab.cli(["snapshot", "--name", "s5"]);
    assert.equal(again.code, 0, again.stderr);
    assert.equal((await lab.cli(["snapshot", "rm", "s5"])).code, 0);
  });

  it("a VM's QEMU killed during a snapshot: the error names it, a restore brings the cluster back", async (t) => {
    const snapping = startCli(lab, ["snapshot", "--name", "s6"]);
    await snapping.waitFor(/^\s*cut:/);
    killPid(await qemuOf(lab, "a"));
    const result = await snapping.done;
    assert.notEqual(result.code, 0);
    t.diagnostic(result.stderr.trim());
    assert.match(result.stderr, /VM a\b/);
    assert.deepEqual(await snapshotNames(lab), ["s1"]);
    assert.deepEqual(await tempDirs(lab), [], "the half snapshot was removed");
    await assertVerified(lab, "s1");
    await assertRunning(lab, ["b"]);
    const restore = await lab.cli(["restore", "s1"]);
    assert.equal(restore.code, 0, restore.stderr);
    await assertRunning(lab, ["a", "b"]);
    assert.equal((await lab.cli(["down"])).code, 0);
    await assertNothingLeft(lab);
  });
});
