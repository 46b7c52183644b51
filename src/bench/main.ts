/**
 * `npm run bench [-- <suite>] [--reps N]` — benchmarks, on real VMs. Results are printed as a table
 * and written to bench-results/<suite>-<time>.json and .html (the same data drawn with uPlot).
 * JSON schema "hotrestore-bench/1" (fields are only ever added):
 *   { schema: "hotrestore-bench/1", suite, startedAt, reps,
 *     host: {cpus, memMiB, kernel, node},
 *     results: [row, ...]        every measurement, one row per run (per suite: the *Row / *Result
 *                                interfaces of src/bench/<suite>.ts)
 *     summary: [group, ...] }    per compared group (e.g. memory size + strategy): the group's key
 *                                fields, `reps`, each metric as {median, min, max, n} over the
 *                                repetitions, and `<metric>VsBaseline` = group median / baseline
 *                                median in the same run (restore: full at the same size; cluster:
 *                                full/simultaneous; snapshot: QEMU's own at the same size)
 * Suites: boot (time from `hotrestore up` to every VM ready, 1, 2 and 4 VMs of 256 MiB);
 * snapshot (4 VMs of 256 and 512 MiB: cluster pause, snapshot time, bytes stored vs RAM, full
 * restore latency, each beside QEMU's own migrate-to-file / -incoming-from-file in the same run);
 * restore (one VM of 512 and 1024 MiB restored with every strategy, cold page cache);
 * cluster (4 VMs of 256–1024 MiB, chain + cycle of TCP flows: strategy × order, restore latency,
 * time to responsiveness, TCP backoff, retransmissions);
 * restore-line (dependency graph + restore line for 10 to 10,000 VMs, pure computation);
 * scale (restore simulator, src/sim: every order and hold setting on 10 to 10,000 VMs; --reps = seeds);
 * load (`--cycles N`, default 50, snapshot + restore cycles of a 4-VM cluster: every cycle checked,
 * the daemon's memory, descriptors and processes before and after; not part of `all`).
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, release, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { median } from "../metrics/stats.ts";
import { writeReport } from "../report/html.ts";
import { DEFINITIONS } from "../report/model.ts";
import { summarize, type SummaryRow } from "./summary.ts";
import { cli, ROOT } from "../cli/run-cli.ts";
import { clusterSuite } from "./cluster.ts";
import { loadSuite } from "./load.ts";
import { restoreLineSuite } from "./restore-line.ts";
import { restoreSuite } from "./restore.ts";
import { runScale } from "./scale.ts";
import { snapshotSuite, type SnapshotBenchResult } from "./snapshot.ts";
import type { ClusterBenchRow } from "./cluster.ts";
import type { RestoreBenchRow } from "./restore.ts";

interface BootResult {
  vms: number;
  memoryMiB: number;
  accel: string;
  upMs: number[];
  medianMs: number;
  minMs: number;
  maxMs: number;
}

async function bootSuite(reps: number): Promise<BootResult[]> {
  const results: BootResult[] = [];
  for (const count of [1, 2, 4]) {
    const times: number[] = [];
    let accel = "?";
    for (let rep = 0; rep < reps; rep += 1) {
      const home = await mkdtemp(join(tmpdir(), "hr-bench-"));
      try {
        const spec = {
          name: "bench",
          vms: Array.from({ length: count }, (_, i) => ({ name: `vm${i}`, memoryMiB: 256 })),
        };
        const specPath = join(home, "spec.json");
        await writeFile(specPath, JSON.stringify(spec));
        const up = await cli(home, ["up", specPath, "--json"]);
        if (up.code !== 0) throw new Error(`up failed: ${up.stderr}`);
        accel = (JSON.parse(up.stdout) as { accel: string }).accel;
        times.push(Math.round(up.ms));
        process.stderr.write(`  boot ${count} VM(s) rep ${rep + 1}: ${Math.round(up.ms)} ms (${accel})\n`);
      } finally {
        await cli(home, ["down"]);
        await rm(home, { recursive: true, force: true });
      }
    }
    results.push({
      vms: count,
      memoryMiB: 256,
      accel,
      upMs: times,
      medianMs: median(times),
      minMs: Math.min(...times),
      maxMs: Math.max(...times),
    });
  }
  return results;
}

function flatSummary(summary: SummaryRow[]): Record<string, string | number | boolean | null>[] {
  return summary.map((row) =>
    Object.fromEntries(
      Object.entries(row).map(([key, value]) => [
        key,
        value !== null && typeof value === "object" ? `${value.median} [${value.min}-${value.max}]` : value,
      ]),
    ),
  );
}

const args = process.argv.slice(2);
const repsIndex = args.indexOf("--reps");
const reps = repsIndex >= 0 ? Number.parseInt(args[repsIndex + 1] ?? "3", 10) : 3;
const cyclesIndex = args.indexOf("--cycles");
const cycles = cyclesIndex >= 0 ? Number.parseInt(args[cyclesIndex + 1] ?? "50", 10) : 50;
const suite =
  args.find((arg, i) => !arg.startsWith("--") && args[i - 1] !== "--reps" && args[i - 1] !== "--cycles") ??
  "all";
const suites: Record<string, (reps: number) => Promise<unknown[]>> = {
  boot: bootSuite,
  snapshot: snapshotSuite,
  restore: restoreSuite,
  "restore-line": restoreLineSuite,
  cluster: clusterSuite,
  scale: (seeds) => runScale({ seeds, out: (line) => process.stderr.write(`  ${line}\n`) }),
  load: () => loadSuite(cycles),
};
const chosen = suite === "all" ? Object.keys(suites).filter((name) => name !== "load") : [suite];

/** Medians, spread and ratios to the baseline of the same run, per suite. */
function summaryOf(name: string, results: unknown[]): SummaryRow[] {
  switch (name) {
    case "restore":
      return summarize(results as RestoreBenchRow[], {
        by: ["memoryMiB", "run"],
        metrics: [
          "restoreLatencyMs",
          "ttrMs",
          "faultP50Us",
          "faultP99Us",
          "recall",
          "allInMs",
          "pagesBeforeStart",
        ],
        baseline: { match: { run: "full" }, within: ["memoryMiB"] },
      });
    case "cluster":
      return summarize(results as ClusterBenchRow[], {
        by: ["run"],
        metrics: [
          "restoreLatencyMs",
          "maxTtrMs",
          "backoffMaxMs",
          "backoffMedianMs",
          "retransmits",
          "droppedFrames",
        ],
        baseline: { match: { run: "full/simultaneous no-hold" }, within: [] },
      });
    case "snapshot":
      return summarize(
        (results as SnapshotBenchResult[]).flatMap((row) => [
          { memoryMiB: row.memoryMiB, tool: "hotrestore", ...row.hotrestore },
          { memoryMiB: row.memoryMiB, tool: "qemu", ...row.qemu },
        ]),
        {
          by: ["memoryMiB", "tool"],
          metrics: ["pauseMs", "maxVmPauseMs", "snapshotMs", "restoreMs"],
          baseline: { match: { tool: "qemu" }, within: ["memoryMiB"] },
        },
      );
    default:
      return [];
  }
}

for (const name of chosen) {
  const run = suites[name];
  if (!run) {
    process.stderr.write(`unknown suite '${name}'; suites: ${Object.keys(suites).join(", ")}, all\n`);
    process.exit(2);
  }
  const startedAt = new Date().toISOString();
  const results = await run(reps);
  const summary = summaryOf(name, results);
  const doc = {
    schema: "hotrestore-bench/1",
    suite: name,
    startedAt,
    reps,
    host: {
      cpus: cpus().length,
      memMiB: Math.round(totalmem() / 1048576),
      kernel: release(),
      node: process.version,
    },
    results,
    summary,
  };
  await mkdir(join(ROOT, "bench-results"), { recursive: true });
  const file = join(ROOT, "bench-results", `${name}-${startedAt.replaceAll(":", "-")}.json`);
  await writeFile(file, JSON.stringify(doc, null, 2));
  const html = await writeReport(file.replace(/\.json$/, ".html"), {
    kind: "bench",
    title: `HotRestore benchmark: ${name}`,
    generatedAt: startedAt,
    suite: name,
    host: doc.host,
    results,
    summary,
    definitions: DEFINITIONS,
  });
  console.table(results);
  if (summary.length > 0) console.table(flatSummary(summary));
  console.log(`results: ${file}\nreport:  ${html}`);
}
