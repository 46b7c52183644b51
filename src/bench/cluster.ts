import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { RestoreReport } from "../restore/cluster/restore.ts";
import type { SnapshotReport } from "../snapshot/cut.ts";
import { cli, cliJson } from "../cli/run-cli.ts";
import { dropPageCache } from "../util/page-cache.ts";
import { simulateReal } from "../sim/versus-real.ts";

/**
 * Cluster suite: 4 VMs of 256–1024 MiB with a TCP chain (a → b → c) and a cycle (c ⇄ d), `mem`
 * workloads on the larger ones, snapshotted once and restored with each strategy × order in the
 * same run (cold page cache before each): cluster restore latency, time to responsiveness, TCP
 * backoff per flow and retransmissions seen at the switch.
 */
export interface ClusterBenchRow {
  /** strategy/order, plus ` no-hold` when frames were dropped instead of held. */
  run: string;
  strategy: string;
  order: string;
  hold: boolean;
  restoreLatencyMs: number;
  maxTtrMs: number | null;
  backoffMaxMs: number | null;
  backoffMedianMs: number | null;
  stalledFlows: number;
  retransmits: number;
  droppedFrames: number;
  startsMs: Record<string, number>;
  bytesBeforeStart: number;
  /** The simulator (src/sim) on this run's readiness, flows, order and hold: its max backoff. */
  simBackoffMaxMs: number | null;
  /** Per flow: predicted vs measured backoff (ms). */
  simVsReal: string;
}

const RUNS: [strategy: string, order: string, extra: string[]][] = [
  ["full", "simultaneous", []],
  ["full", "as-ready", []],
  ["hotrestore", "as-ready", []],
  ["hotrestore", "simultaneous", []],
  ["hotrestore", "restore-line", ["--no-hold"]],
  ["hotrestore", "restore-line", []],
  ["hotrestore", "restore-line", ["--paging", "page-server"]],
  ["full", "restore-line", []],
  ["mmap", "simultaneous", []],
  ["lazy", "restore-line", []],
  ["workingset", "restore-line", []],
];

export async function clusterSuite(reps: number): Promise<ClusterBenchRow[]> {
  const rows: ClusterBenchRow[] = [];
  const home = await mkdtemp(join(tmpdir(), "hr-bench-cluster-"));
  try {
    const flow = (to: string, port: number) => ({ kind: "tcp-stream", to, port, rateKiBps: 128 });
    const spec = {
      name: "cbench",
      vms: [
        { name: "a", memoryMiB: 256, workloads: [flow("b", 7201)] },
        {
          name: "b",
          memoryMiB: 512,
          workloads: [flow("c", 7202), { kind: "mem", mib: 200, hotPercent: 15, touchesPerSec: 20_000 }],
        },
        {
          name: "c",
          memoryMiB: 1024,
          workloads: [flow("d", 7203), { kind: "mem", mib: 400, hotPercent: 15, touchesPerSec: 20_000 }],
        },
        {
          name: "d",
          memoryMiB: 512,
          workloads: [flow("c", 7204), { kind: "mem", mib: 200, hotPercent: 15, touchesPerSec: 20_000 }],
        },
      ],
    };
    const specPath = join(home, "spec.json");
    await writeFile(specPath, JSON.stringify(spec));
    await cliJson(home, ["up", specPath]);
    await sleep(10_000);
    const snap = await cliJson<SnapshotReport>(home, ["snapshot", "--name", "s"]);
    // One restore to refine the working sets, as a second restore would have them.
    await cliJson(home, ["restore", "s", "--strategy", "lazy", "--order", "simultaneous"]);
    for (let rep = 0; rep < reps; rep += 1) {
      for (const [strategy, order, extra] of RUNS) {
        await dropPageCache(snap.path);
        const report = await cliJson<RestoreReport>(home, [
          "restore",
          "s",
          "--strategy",
          strategy,
          "--order",
          order,
          ...extra,
        ]);
        const versus = simulateReal(report);
        const ttrs = report.vms.flatMap((vm) => (vm.ttrMs === null ? [] : [vm.ttrMs]));
        const row: ClusterBenchRow = {
          run: `${strategy}${extra.includes("page-server") ? " page-server" : ""}/${order}${report.hold ? "" : " no-hold"}`,
          strategy,
          order,
          hold: report.hold,
          restoreLatencyMs: report.restoreLatencyMs,
          maxTtrMs: ttrs.length > 0 ? Math.max(...ttrs) : null,
          backoffMaxMs: report.backoff.maxMs,
          backoffMedianMs: report.backoff.medianMs,
          stalledFlows: report.backoff.stalledFlows,
          retransmits: report.retransmits,
          droppedFrames: report.droppedFrames,
          startsMs: Object.fromEntries(report.vms.map((vm) => [vm.name, vm.startedMs])),
          bytesBeforeStart: report.vms.reduce((sum, vm) => sum + vm.bytesBeforeStart, 0),
          simBackoffMaxMs: versus.predictedMaxMs,
          simVsReal: versus.flows
            .map((flow) => `${flow.from}>${flow.to} ${flow.predictedMs}/${flow.measuredMs ?? "-"}`)
            .join(" "),
        };
        rows.push(row);
        process.stderr.write(
          `  cluster ${strategy} ${order}${report.hold ? "" : " (no hold)"}: ${JSON.stringify(row)}\n`,
        );
      }
    }
  } finally {
    await cli(home, ["down"]);
    await rm(home, { recursive: true, force: true });
  }
  return rows;
}
