import assert from "node:assert/strict";
import { mkdir, mkdtemp, open, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { ourMounts } from "../../src/restore/vm/fuse/mount.ts";
import { copyPristine, formatCounts, readPristine, runCampaign } from "./corruption-campaign.ts";
import { linkFarm, listFiles, materialize, readManifest, writeManifest } from "./corruption-damage.ts";
import { verifyDamages } from "./corruption-judge.ts";
import { Lab } from "./fixture.ts";

/**
 * Issue 7 part 2: one real snapshot of a 2-VM cluster, then 1,000 seeded damages of copies of it
 * (bit flips in every kind of file, truncation, extension, deletion, files swapped between the VMs,
 * symlinks, wrong format versions, manifest edits with and without a recomputed checksum). Each
 * is judged in-process through what a restore runs before it starts any QEMU (the store's `open`
 * and `preflightRestore`), then through the memory a restore would stream; a few go through the
 * real daemon and CLI. Counts by kind are printed as test diagnostics.
 *
 * Order: the end-to-end restores first, while the cluster runs (a refused restore must leave it
 * running); then one that stops it; then the in-process damages, with no VM using the CPU.
 */
const SEED = 20261126;
const DAMAGES = 1000;

describe("a damaged snapshot is refused before any guest runs on it", () => {
  let lab: Lab;
  let shm = "";
  let store = "";
  let pristineDir = "";
  let clusterPids: number[] = [];

  before(async () => {
    lab = await Lab.create("hr-corrupt-");
    shm = await mkdtemp("/dev/shm/hr-corrupt-");
    const spec = await lab.writeSpec({
      name: "corrupt",
      vms: [
        {
          name: "a",
          memoryMiB: 128,
          diskMiB: 16,
          workload: { kind: "tcp-stream", to: "b", port: 7001, rateKiBps: 32 },
        },
        { name: "b", memoryMiB: 128, diskMiB: 16 },
      ],
    });
    const up = await lab.cli(["up", spec]);
    assert.equal(up.code, 0, up.stderr);
    // a's TCP stream reaches b through the switch (ports bound to the VMs' MACs) before the cut
    for (let polls = 0; ; polls += 1) {
      const status = await lab.cliJson<{ traffic: { from: string; to: string; frames: number }[] }>([
        "status",
      ]);
      if (status.traffic.some((pair) => pair.from === "a" && pair.to === "b" && pair.frames > 10)) break;
      assert.ok(polls < 60, `no traffic from a to b: ${JSON.stringify(status.traffic)}`);
      await sleep(500);
    }
    const snap = await lab.cli(["snapshot", "--name", "s1"]);
    assert.equal(snap.code, 0, snap.stderr);
    clusterPids = (await lab.processes()).sort();
    // The pristine snapshot leaves the store; each end-to-end damage is a copy put in its place.
    store = join(lab.home, "snapshots");
    pristineDir = join(lab.home, "pristine", "s1");
    await mkdir(join(lab.home, "pristine"));
    await rename(join(store, "s1"), pristineDir);
  });
  after(async () => {
    await lab.cleanup();
    if (shm !== "") await rm(shm, { recursive: true, force: true });
  });

  /** A copy of the pristine snapshot in the store, damaged by `damage`; removed afterwards. */
  async function withDamaged(
    damage: (dir: string) => Promise<void>,
    run: () => Promise<void>,
  ): Promise<void> {
    const dir = join(store, "s1");
    await linkFarm(pristineDir, dir, await listFiles(pristineDir));
    try {
      await damage(dir);
      await run();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  async function flipByte(path: string, offset: number): Promise<void> {
    await materialize(path);
    const handle = await open(path, "r+");
    try {
      const byte = Buffer.alloc(1);
      await handle.read(byte, 0, 1, offset);
      byte[0] = (byte[0] ?? 0) ^ 0x10;
      await handle.write(byte, 0, 1, offset);
    } finally {
      await handle.close();
    }
  }

  const refusedBeforeStart: [string, (dir: string) => Promise<void>, RegExp][] = [
    [
      "a bit flip in b's device state",
      (dir) => flipByte(join(dir, "vms/b/device.bin"), 4000),
      /vms\/b\/device\.bin/,
    ],
    [
      "device states swapped between the VMs",
      async (dir) => {
        await rename(join(dir, "vms/a/device.bin"), join(dir, "swap"));
        await rename(join(dir, "vms/b/device.bin"), join(dir, "vms/a/device.bin"));
        await rename(join(dir, "swap"), join(dir, "vms/b/device.bin"));
      },
      /vms\/[ab]\/device\.bin/,
    ],
    [
      "a newer format version (checksum recomputed)",
      async (dir) => {
        const doc = await readManifest(dir);
        await writeManifest(dir, { ...doc, formatVersion: 2 }, true);
      },
      /manifest\.json: format version 2 is newer/,
    ],
    [
      "a bit flip in a's disk at the cut",
      (dir) => flipByte(join(dir, "vms/a/files/disk.qcow2"), 70_000),
      /vms\/a\/files\/disk\.qcow2/,
    ],
    [
      "VM a pointed at b's device state (checksum recomputed)",
      async (dir) => {
        const doc = await readManifest(dir);
        const vm = doc.vms.find((entry) => entry.name === "a");
        assert.ok(vm);
        vm.deviceState = "vms/b/device.bin";
        await writeManifest(dir, doc, true);
      },
      /manifest\.json: VM a: vms\/b\/device\.bin lies outside vms\/a\//,
    ],
  ];

  for (const [what, damage, message] of refusedBeforeStart) {
    it(`restore through the daemon refuses ${what}, starting no QEMU and leaving the running cluster alone`, async () => {
      await withDamaged(damage, async () => {
        const restore = await lab.cli(["restore", "s1"]);
        assert.equal(restore.code, 1, restore.stderr);
        assert.match(restore.stderr, message);
        assert.doesNotMatch(restore.stderr, /unexpected error/);
        assert.deepEqual((await lab.processes()).sort(), clusterPids, "the same QEMU processes, no new one");
      });
    });
  }

  it("after every refusal the cluster that ran before still runs", async () => {
    const status = await lab.cliJson<{ vms: { name: string; state: string }[] }>(["status"]);
    assert.deepEqual(
      status.vms.map((vm) => `${vm.name}:${vm.state}`),
      ["a:running", "b:running"],
    );
  });

  /** Runs `check` with one bit flipped in a stored page of VM a's RAM image. */
  async function withDamagedMemory(check: () => Promise<void>): Promise<void> {
    const source = await readPristine(pristineDir, ["a", "b"]);
    const page = source.presentPages.get("vms/a/ram/ram0.raw")?.[500];
    assert.ok(page !== undefined);
    await withDamaged((dir) => flipByte(join(dir, "vms/a/ram/ram0.raw"), page * 4096 + 123), check);
  }

  it("a damaged memory chunk fails a full restore before the guest runs, and no process is left", async () => {
    await withDamagedMemory(async () => {
      const restore = await lab.cli(["restore", "s1", "--strategy", "full"]);
      assert.equal(restore.code, 1, restore.stderr);
      assert.match(
        restore.stderr,
        /VM a: .*vms\/a\/ram\/ram0\.raw: chunk \d+ checksum mismatch \(step PREPARE\)/,
      );
      assert.deepEqual(await lab.waitNoProcesses(10_000), [], "every QEMU the restore started was stopped");
    });
  });

  it("a damaged memory chunk fails a kernel-paged hotrestore, never reaching the guest; no process or mount is left", async () => {
    await withDamagedMemory(async () => {
      const restore = await lab.cli(["restore", "s1", "--strategy", "hotrestore", "--paging", "kernel"]);
      assert.equal(restore.code, 1, restore.stderr);
      // Found by the fill or by a page-cache miss, whichever reads the chunk first: either way the
      // kernel never got its bytes (the miss was answered EIO), and the error names VM and file.
      assert.match(restore.stderr, /VM a: .*vms\/a\/ram\/ram0\.raw: chunk \d+ checksum mismatch/);
      assert.deepEqual(await lab.waitNoProcesses(10_000), [], "every QEMU the restore started was stopped");
      assert.deepEqual(await ourMounts(lab.home), [], "no guest RAM file system is left mounted");
    });
  });

  // Last, with no VM running: judged in-process, the damages need no QEMU.
  it(`refuses ${DAMAGES} seeded damages before start, or at the first read of a damaged memory chunk`, async (t) => {
    const started = { wall: performance.now(), cpu: process.cpuUsage() };
    const source = await readPristine(pristineDir, ["a", "b"]);
    // Copies are hard-link farms on tmpfs: cheap to make and to remove.
    const pristine = await copyPristine(source, join(shm, "pristine", "s1"));
    const result = await runCampaign({
      pristine,
      work: join(shm, "work"),
      count: DAMAGES,
      seed: SEED,
      verifyEvery: 100,
      concurrency: 2,
    });
    const cpu = process.cpuUsage(started.cpu);
    const seconds = (microseconds: number): string => (microseconds / 1e6).toFixed(1);
    for (const line of formatCounts(result).split("\n")) t.diagnostic(line);
    // Figures, not thresholds: the wall time depends on what else runs on the machine.
    t.diagnostic(
      `campaign: ${seconds((performance.now() - started.wall) * 1000)} s wall, ` +
        `${seconds(cpu.user)} s user + ${seconds(cpu.system)} s system CPU`,
    );
    assert.deepEqual(result.failures, []);
    const total = [...result.byKind.values()].reduce((sum, kind) => sum + kind.total, 0);
    assert.equal(total, DAMAGES);
    for (const [kind, counts] of result.byKind) {
      if (!kind.startsWith("flip:raw") && kind !== "swap") {
        assert.equal(counts.refusedBeforeStart, counts.total, `${kind}: every one refused before start`);
      }
    }
    assert.deepEqual(await verifyDamages(pristine.dir), { files: [] }, "the pristine copy is intact");
    assert.deepEqual(await lab.processes(), [], "no process was started");
  });
});
