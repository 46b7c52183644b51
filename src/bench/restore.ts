import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { loadGuestImage } from "../image/image.ts";
import { cacheDir } from "../util/paths.ts";
import { dropPageCache } from "../util/page-cache.ts";
import { chooseAccel } from "../vm/accel.ts";
import { reference } from "./snapshot.ts";
import type { RestoreReport } from "../restore/cluster/restore.ts";
import { STRATEGIES, type Strategy } from "../restore/vm/strategy.ts";
import type { SnapshotReport } from "../snapshot/cut.ts";
import { cli, cliJson } from "../cli/run-cli.ts";

/**
 * Restore suite: one VM (512 and 1024 MiB) running the `mem` workload (hot set 15% of its area,
 * the area 40% of RAM), snapshotted once, then restored with every strategy in the same run, each
 * with the snapshot's files dropped from the page cache first (GNU dd `iflag=nocache count=0`
 * per file, i.e. posix_fadvise DONTNEED). `hotrestore` runs first (on the working set found at
 * snapshot time) and again last (on the working set refined by the lazy restores in between), to
 * show the refinement. QEMU's own restore (`-incoming` from its own migration file, cold) of the
 * same VM runs first, as the reference no HotRestore code touches.
 */

export interface RestoreBenchRow {
  memoryMiB: number;
  strategy: string;
  /** The strategy, or `hotrestore-refined` for the last hotrestore (on the refined working set). */
  run: string;
  restoreLatencyMs: number;
  pagesBeforeStart: number;
  pagesAfterStart: number;
  faults: number;
  faultP50Us: number | null;
  faultP99Us: number | null;
  recall: number | null;
  allInMs: number | null;
  ttrMs: number | null;
  ttrBasis: string | null;
  faultTtrMs: number | null;
  w0Pages: number;
  /** hotrestore: window size changes (count) and the final size. */
  windowChanges: number | null;
  windowFinal: number | null;
}

function qemuRow(memoryMiB: number, restoreLatencyMs: number): RestoreBenchRow {
  return {
    memoryMiB,
    strategy: "qemu",
    run: "qemu",
    restoreLatencyMs,
    pagesBeforeStart: 0,
    pagesAfterStart: 0,
    faults: 0,
    faultP50Us: null,
    faultP99Us: null,
    recall: null,
    allInMs: null,
    ttrMs: null,
    ttrBasis: null,
    faultTtrMs: null,
    w0Pages: 0,
    windowChanges: null,
    windowFinal: null,
  };
}

/**
 * In this order: hotrestore (kernel paging, the default) on the snapshot's own working set, the
 * baselines, then on the working set the post-copy restores refined: hotrestore on the page server
 * (`--paging page-server`, which measures recall and refines again) and on kernel paging.
 */
const RUNS: { strategy: Strategy; run: string; args: string[] }[] = [
  { strategy: "hotrestore", run: "hotrestore", args: [] },
  ...STRATEGIES.filter((s) => s !== "hotrestore").map((strategy) => ({ strategy, run: strategy, args: [] })),
  { strategy: "hotrestore", run: "hotrestore-page-server", args: ["--paging", "page-server"] },
  { strategy: "hotrestore", run: "hotrestore-refined", args: [] },
];

export async function restoreSuite(reps: number): Promise<RestoreBenchRow[]> {
  const rows: RestoreBenchRow[] = [];
  const image = await loadGuestImage();
  const accel = (await chooseAccel(image, cacheDir())).accel;
  for (const memoryMiB of [512, 1024]) {
    const home = await mkdtemp(join(tmpdir(), "hr-bench-restore-"));
    try {
      const spec = {
        name: "rbench",
        vms: [
          {
            name: "vm0",
            memoryMiB,
            workload: {
              kind: "mem",
              mib: Math.round(memoryMiB * 0.4),
              hotPercent: 15,
              touchesPerSec: 20_000,
            },
          },
        ],
      };
      const specPath = join(home, "spec.json");
      await writeFile(specPath, JSON.stringify(spec));
      // QEMU's own full restore of the same VM (its migration stream to a file and back), same run.
      const qemu = await reference(spec, image, accel);
      rows.push(qemuRow(memoryMiB, qemu.restoreMs));
      process.stderr.write(`  restore ${memoryMiB} MiB qemu (own file restore): ${qemu.restoreMs} ms\n`);
      await cliJson(home, ["up", specPath]);
      await sleep(8_000);
      const snap = await cliJson<SnapshotReport>(home, ["snapshot", "--name", "s"]);
      for (let rep = 0; rep < reps; rep += 1) {
        for (const { strategy, run, args } of RUNS) {
          await dropPageCache(snap.path);
          const report = await cliJson<RestoreReport>(home, [
            "restore",
            "s",
            "--strategy",
            strategy,
            ...args,
          ]);
          const vm = report.vms[0];
          const row: RestoreBenchRow = {
            memoryMiB,
            strategy,
            run,
            restoreLatencyMs: report.restoreLatencyMs,
            pagesBeforeStart: vm?.pagesBeforeStart ?? 0,
            pagesAfterStart: vm?.pagesAfterStart ?? 0,
            faults: vm?.faults ?? 0,
            faultP50Us: vm?.faultServiceUs ? Math.round(vm.faultServiceUs.p50) : null,
            faultP99Us: vm?.faultServiceUs ? Math.round(vm.faultServiceUs.p99) : null,
            recall: vm?.workingSet?.recall ?? null,
            allInMs: vm?.backgroundDoneMs ?? null,
            ttrMs: vm?.ttrMs ?? null,
            ttrBasis: vm?.ttrBasis ?? null,
            faultTtrMs: vm?.faultTtrMs ?? null,
            w0Pages: vm?.w0Pages ?? 0,
            windowChanges: vm?.window ? vm.window.length : null,
            windowFinal: vm?.window ? (vm.window[vm.window.length - 1]?.pages ?? null) : null,
          };
          rows.push(row);
          process.stderr.write(`  restore ${memoryMiB} MiB ${strategy}: ${JSON.stringify(row)}\n`);
        }
      }
    } finally {
      await cli(home, ["down"]);
      await rm(home, { recursive: true, force: true });
    }
  }
  return rows;
}
