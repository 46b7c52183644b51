import { readdir, readFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { ClusterStatus } from "../cluster/cluster.ts";
import type { RestoreReport } from "../restore/cluster/restore.ts";
import type { SnapshotReport } from "../snapshot/cut.ts";
import { cli, cliJson } from "../cli/run-cli.ts";

/**
 * Load suite (issue 7): `cycles` snapshot + restore cycles in a row of a 4-VM cluster with TCP
 * flows (a chain and a cycle) and memory workloads, every restore `hotrestore` + restore-line.
 * Each cycle checks the restore: every VM running, every TCP flow on its first connection with
 * no sequence error. Before the first cycle and after the last (and the max over all cycles) it
 * reads the daemon's resident memory and open file descriptors (/proc/<pid>) and counts the
 * processes whose command line names the state directory (the daemon and its QEMUs).
 * Bound: the daemon's RSS after the last cycle at most MAX_RSS_GROWTH_MIB above its RSS after the
 * first (the first restore loads code and sizes V8's heap: 91 → 177 MiB in the first run); no
 * descriptor or process more than before the cycles.
 */
export const MAX_RSS_GROWTH_MIB = 64;
/** Snapshots kept on disk during the run (older ones are removed, as an operator would). */
const KEEP_SNAPSHOTS = 2;

export interface LoadSample {
  rssMiB: number;
  fds: number;
  processes: number;
}

export interface LoadResult {
  cycles: number;
  vms: number;
  cyclesOk: number;
  failures: string[];
  before: LoadSample;
  /** After the first cycle: the base of the RSS bound. */
  afterFirstCycle: LoadSample;
  after: LoadSample;
  maxRssMiB: number;
  rssGrowthMiB: number;
  rssBoundMiB: number;
  withinBounds: boolean;
  medianRestoreLatencyMs: number;
  medianSnapshotPauseMs: number;
  totalSeconds: number;
}

async function sample(home: string): Promise<LoadSample> {
  const pid = Number.parseInt(await readFile(join(home, "daemon.pid"), "utf8"), 10);
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? "0");
  const fds = (await readdir(`/proc/${pid}/fd`)).length;
  let processes = 0;
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    if (entry === String(pid)) {
      processes += 1;
      continue;
    }
    const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (cmdline.includes(home)) processes += 1;
  }
  return { rssMiB: Math.round((rssKiB / 1024) * 10) / 10, fds, processes };
}

function checkFlows(status: ClusterStatus): string | undefined {
  const notRunning = status.vms.filter((vm) => vm.state !== "running").map((vm) => vm.name);
  if (notRunning.length > 0) return `not running: ${notRunning.join(", ")}`;
  for (const vm of status.vms) {
    for (const [id, stats] of Object.entries(vm.workloads ?? {})) {
      if (!id.startsWith("stream-recv")) continue;
      const s = stats as { connects?: number; seqErrors?: number };
      if (s.connects !== 1 || s.seqErrors !== 0) {
        return `${vm.name} ${id}: connects ${String(s.connects)}, seq errors ${String(s.seqErrors)}`;
      }
    }
  }
  return undefined;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? 0;
}

export async function loadSuite(cycles: number): Promise<LoadResult[]> {
  const home = await mkdtemp(join(tmpdir(), "hr-bench-load-"));
  const started = performance.now();
  try {
    const flow = (to: string, port: number) => ({ kind: "tcp-stream", to, port, rateKiBps: 128 });
    const mem = { kind: "mem", mib: 48, hotPercent: 15, touchesPerSec: 10_000 };
    const spec = {
      name: "load",
      vms: [
        { name: "a", memoryMiB: 192, workloads: [flow("b", 7301)] },
        { name: "b", memoryMiB: 256, workloads: [flow("c", 7302), mem] },
        { name: "c", memoryMiB: 256, workloads: [flow("d", 7303), mem] },
        { name: "d", memoryMiB: 192, workloads: [flow("c", 7304)] },
      ],
    };
    const specPath = join(home, "spec.json");
    await writeFile(specPath, JSON.stringify(spec));
    await cliJson(home, ["up", specPath]);
    await sleep(5_000);
    const before = await sample(home);
    let maxRss = before.rssMiB;
    const failures: string[] = [];
    const latencies: number[] = [];
    const pauses: number[] = [];
    let ok = 0;
    let first: LoadSample | undefined;
    for (let cycle = 1; cycle <= cycles; cycle += 1) {
      try {
        const snap = await cliJson<SnapshotReport>(home, ["snapshot", "--name", `c${cycle}`]);
        pauses.push(snap.pauseMs);
        const report = await cliJson<RestoreReport>(home, ["restore", `c${cycle}`]);
        latencies.push(report.restoreLatencyMs);
        await sleep(1_000);
        const problem = checkFlows(await cliJson<ClusterStatus>(home, ["status", "--workloads"]));
        if (problem === undefined) ok += 1;
        else failures.push(`cycle ${cycle}: ${problem}`);
        const old = cycle - KEEP_SNAPSHOTS;
        if (old >= 1) await cli(home, ["snapshot", "rm", `c${old}`]);
      } catch (error) {
        failures.push(`cycle ${cycle}: ${error instanceof Error ? error.message : String(error)}`);
      }
      const now = await sample(home);
      first ??= now;
      maxRss = Math.max(maxRss, now.rssMiB);
      process.stderr.write(
        `  load cycle ${cycle}/${cycles}: rss ${now.rssMiB} MiB, fds ${now.fds}, processes ${now.processes}, ok ${ok}\n`,
      );
    }
    const after = await sample(home);
    const base = first ?? before;
    const growth = Math.round((after.rssMiB - base.rssMiB) * 10) / 10;
    return [
      {
        cycles,
        vms: spec.vms.length,
        cyclesOk: ok,
        failures,
        before,
        afterFirstCycle: base,
        after,
        maxRssMiB: maxRss,
        rssGrowthMiB: growth,
        rssBoundMiB: MAX_RSS_GROWTH_MIB,
        withinBounds:
          growth <= MAX_RSS_GROWTH_MIB && after.fds <= before.fds && after.processes <= before.processes,
        medianRestoreLatencyMs: median(latencies),
        medianSnapshotPauseMs: median(pauses),
        totalSeconds: Math.round((performance.now() - started) / 1000),
      },
    ];
  } finally {
    await cli(home, ["down"]);
    await rm(home, { recursive: true, force: true });
  }
}
