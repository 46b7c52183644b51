import { stat } from "node:fs/promises";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { workloadLaunches } from "../cluster/workloads.ts";
import { loadGuestImage, type GuestImage } from "../image/image.ts";
import { VirtualSwitch } from "../net/switch.ts";
import type { RestoreReport } from "../restore/cluster/restore.ts";
import { waitMigration } from "../snapshot/capture.ts";
import type { SnapshotReport } from "../snapshot/cut.ts";
import { validateSpec } from "../spec/validate.ts";
import { silentLogger } from "../util/log.ts";
import { chooseAccel } from "../vm/accel.ts";
import type { Accel } from "../vm/argv.ts";
import { Vm } from "../vm/vm.ts";
import { cacheDir } from "../util/paths.ts";
import { cli, cliJson } from "../cli/run-cli.ts";
import { dropPageCache } from "../util/page-cache.ts";

/**
 * Snapshot suite: a 4-VM cluster (memory workloads with a hot set, two TCP flows) snapshotted and
 * fully restored by HotRestore, and the same cluster through QEMU's own tools in the same run:
 * `stop` + `migrate exec:cat > file` + `cont` per VM (in parallel), restore = fresh QEMU with
 * `-incoming` from that file + `cont`.
 */
const WARMUP_MS = 6_000;
const MAX_BANDWIDTH = 4 * 1024 ** 3;

function clusterSpec(memoryMiB: number): unknown {
  const mib = Math.round(memoryMiB * 0.4);
  const mem = { kind: "mem", mib, hotPercent: 15, touchesPerSec: 20_000 };
  return {
    name: "bench",
    vms: [0, 1, 2, 3].map((i) => ({
      name: `vm${i}`,
      memoryMiB,
      workloads:
        i % 2 === 0 ? [mem, { kind: "tcp-stream", to: `vm${i + 1}`, port: 7001, rateKiBps: 128 }] : [mem],
    })),
  };
}

export interface SnapshotBenchResult {
  memoryMiB: number;
  vms: number;
  ramMiB: number;
  hotrestore: {
    pauseMs: number;
    maxVmPauseMs: number;
    snapshotMs: number;
    storedMiB: number;
    restoreMs: number;
  };
  qemu: { pauseMs: number; maxVmPauseMs: number; snapshotMs: number; fileMiB: number; restoreMs: number };
}

async function ours(memoryMiB: number): Promise<SnapshotBenchResult["hotrestore"]> {
  const home = await mkdtemp(join(tmpdir(), "hr-bench-"));
  try {
    const specPath = join(home, "spec.json");
    await writeFile(specPath, JSON.stringify(clusterSpec(memoryMiB)));
    await cliJson(home, ["up", specPath]);
    await sleep(WARMUP_MS);
    const snap = await cliJson<SnapshotReport>(home, ["snapshot", "--name", "bench"]);
    const restore = await cliJson<RestoreReport>(home, ["restore", "bench", "--strategy", "full"]);
    return {
      pauseMs: snap.pauseMs,
      maxVmPauseMs: Math.max(...snap.vms.map((vm) => vm.pauseMs)),
      snapshotMs: snap.durationMs,
      storedMiB: Math.round(snap.storedBytes / 1048576),
      restoreMs: restore.restoreLatencyMs,
    };
  } finally {
    await cli(home, ["down"]);
    await rm(home, { recursive: true, force: true });
  }
}

/**
 * QEMU's own snapshot and restore of a cluster, as a user of stock QEMU does it: boot, warm up,
 * `stop` + `migrate exec:cat > file` + `cont` per VM; restore = fresh QEMU `-incoming` from that
 * file (dropped from the page cache first) + `cont`.
 */
export async function reference(
  specDoc: unknown,
  image: GuestImage,
  accel: Accel,
): Promise<SnapshotBenchResult["qemu"]> {
  const dir = await mkdtemp(join(tmpdir(), "hr-bench-qemu-"));
  const spec = validateSpec(specDoc, "bench");
  const hosts = spec.vms.map((vm) => `${vm.name}:${vm.ip}`).join(",");
  const log = silentLogger();
  let sw = new VirtualSwitch({ dir: join(dir, "sw1") });
  let vms = spec.vms.map((vm) => new Vm(vm, join(dir, "a", vm.name), log));
  try {
    await Promise.all(
      vms.map(async (vm) => {
        await vm.start({
          accel: "tcg",
          image,
          netSocket: await sw.addPort(vm.spec.name),
          hosts,
          disk: undefined,
        });
        await vm.waitReady(300_000);
      }),
    );
    for (const launch of workloadLaunches(spec.vms)) {
      await vms.find((vm) => vm.spec.name === launch.vm)?.agent.spawn(launch.command);
    }
    await sleep(WARMUP_MS);
    const files = vms.map((vm) => join(dir, `${vm.spec.name}.mig`));
    const started = performance.now();
    const pauses = await Promise.all(
      vms.map(async (vm, i) => {
        const stopAt = performance.now();
        await vm.qmp.execute("stop");
        await vm.qmp.execute("migrate-set-parameters", { "max-bandwidth": MAX_BANDWIDTH });
        await vm.qmp.execute("migrate", { uri: `exec:cat > ${files[i] ?? ""}` });
        await waitMigration(vm, 600_000);
        await vm.qmp.execute("cont");
        return { stopAt, contAt: performance.now() };
      }),
    );
    const snapshotMs = performance.now() - started;
    let fileBytes = 0;
    for (const file of files) fileBytes += (await stat(file)).size;
    await Promise.all(vms.map((vm) => vm.stop()));
    await sw.close();
    for (const file of files) await dropPageCache(file);

    sw = new VirtualSwitch({ dir: join(dir, "sw2") });
    vms = spec.vms.map((vm) => new Vm(vm, join(dir, "b", vm.name), log));
    const restoreStart = performance.now();
    await Promise.all(
      vms.map(async (vm, i) => {
        const netSocket = await sw.addPort(vm.spec.name);
        await vm.start({ accel, image, netSocket, hosts, disk: undefined, incoming: true });
        await vm.qmp.execute("migrate-incoming", { uri: `exec:cat ${files[i] ?? ""}` });
        await waitMigration(vm, 600_000);
      }),
    );
    await Promise.all(vms.map((vm) => vm.qmp.execute("cont")));
    const restoreMs = performance.now() - restoreStart;
    const first = Math.min(...pauses.map((p) => p.stopAt));
    const last = Math.max(...pauses.map((p) => p.contAt));
    return {
      pauseMs: Math.round(last - first),
      maxVmPauseMs: Math.round(Math.max(...pauses.map((p) => p.contAt - p.stopAt))),
      snapshotMs: Math.round(snapshotMs),
      fileMiB: Math.round(fileBytes / 1048576),
      restoreMs: Math.round(restoreMs),
    };
  } finally {
    await Promise.all(vms.map((vm) => vm.stop()));
    await sw.close();
    await rm(dir, { recursive: true, force: true });
  }
}

export async function snapshotSuite(reps: number): Promise<SnapshotBenchResult[]> {
  const image = await loadGuestImage();
  const accel = (await chooseAccel(image, cacheDir())).accel;
  const results: SnapshotBenchResult[] = [];
  for (const memoryMiB of [256, 512]) {
    for (let rep = 0; rep < reps; rep += 1) {
      const hotrestore = await ours(memoryMiB);
      process.stderr.write(`  snapshot 4x${memoryMiB} MiB hotrestore: ${JSON.stringify(hotrestore)}\n`);
      const qemu = await reference(clusterSpec(memoryMiB), image, accel);
      process.stderr.write(`  snapshot 4x${memoryMiB} MiB qemu:       ${JSON.stringify(qemu)}\n`);
      results.push({ memoryMiB, vms: 4, ramMiB: memoryMiB * 4, hotrestore, qemu });
    }
  }
  return results;
}
