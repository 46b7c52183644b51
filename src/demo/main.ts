/**
 * `npm run demo` — the main job. Boots the default cluster (examples/default.json: db ← app ← web,
 * TCP streams along the chain and memory workloads), shows it working, snapshots it, restores
 * that snapshot with every strategy × order (cold page cache before each), shows the guests back
 * at the cut with their TCP flows unbroken, prints the comparison table and writes report.html.
 * Ctrl-C at any moment stops the daemon and with it every VM (nothing is left running).
 */
import { readFile } from "node:fs/promises";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ClusterStatus } from "../cluster/cluster.ts";
import type { ExecReply } from "../control/controller.ts";
import { connectDaemon, ensureDaemon, type DaemonConnection } from "../cli/daemon-client.ts";
import { formatStatus, human, table } from "../cli/format.ts";
import { formatSnapshotReport } from "../cli/format-snapshot.ts";
import { writeReport } from "../report/html.ts";
import { DEFINITIONS, type RunRecord } from "../report/model.ts";
import type { SnapshotPlan } from "../restore/cluster/plan.ts";
import type { RestoreReport } from "../restore/cluster/restore.ts";
import { ORDERS } from "../restore/cluster/start-gate.ts";
import { STRATEGIES } from "../restore/vm/strategy.ts";
import type { SnapshotReport } from "../snapshot/cut.ts";
import { isHrError, messageOf } from "../util/errors.ts";
import { dropPageCache } from "../util/page-cache.ts";
import { stateDir } from "../util/paths.ts";
import { step, stopBars, wait } from "./progress.ts";
import { stopDaemon } from "./stop-daemon.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const specPath = process.argv[2] ?? join(ROOT, "examples", "default.json");
const reportPath = join(ROOT, "report.html");
process.env.HOTRESTORE_HOME ??= join(stateDir(), "demo");
/** The runs, baseline first: every strategy under every order. */
const RUNS = STRATEGIES.flatMap((strategy) => ORDERS.map((order) => ({ strategy, order })));

function say(text: string): void {
  process.stdout.write(`${text}\n`);
}

async function exec(daemon: DaemonConnection, vm: string, command: string): Promise<string> {
  const reply = (await daemon.request({ type: "exec", vm, command, timeoutMs: 30_000 })) as ExecReply;
  return Buffer.from(reply.stdout, "base64").toString("utf8").trim();
}

let interrupted: Promise<void> | undefined;
process.on("SIGINT", () => {
  if (interrupted) return;
  stopBars();
  say("\ninterrupted: stopping the daemon and every VM");
  interrupted = stopDaemon().then(
    () => process.exit(130),
    () => process.exit(130),
  );
});

async function uptimes(daemon: DaemonConnection, vms: readonly string[]): Promise<string> {
  const values = await Promise.all(
    vms.map(async (vm) => `${vm} ${await exec(daemon, vm, "cut -d' ' -f1 /proc/uptime")} s`),
  );
  return values.join(", ");
}

function comparison(runs: readonly RunRecord[]): string {
  const rows = runs.map(({ report }) => {
    const ttrs = report.vms.flatMap((vm) => (vm.ttrMs === null ? [] : [vm.ttrMs]));
    return [
      report.strategy,
      report.order,
      `${Math.round(report.restoreLatencyMs)} ms`,
      ttrs.length > 0 ? `${Math.round(Math.max(...ttrs))} ms` : "-",
      report.backoff.maxMs === null ? "-" : `${report.backoff.maxMs} ms`,
      String(report.retransmits),
      human(report.vms.reduce((sum, vm) => sum + vm.bytesBeforeStart, 0)),
    ];
  });
  return table([
    ["STRATEGY", "ORDER", "CLUSTER LATENCY", "MAX TTR", "MAX BACKOFF", "RETRANSMITS", "LOADED BEFORE START"],
    ...rows,
  ]);
}

async function main(): Promise<void> {
  const spec = JSON.parse(await readFile(specPath, "utf8")) as {
    vms: { name: string; memoryMiB?: number }[];
  };
  say(`== HotRestore demo: ${specPath} (${spec.vms.map((vm) => vm.name).join(", ")})`);
  const daemon = await ensureDaemon();
  try {
    let status = (await step(`booting ${spec.vms.length} VMs`, spec.vms.length, (s) =>
      daemon.request({ type: "up", spec, source: specPath }, (note) => {
        if (note.step === "ready") s.tick(1, `${note.vm ?? ""} ready`);
        else s.detail(`${note.step}${note.vm ? ` ${note.vm}` : ""}`);
      }),
    )) as ClusterStatus;
    const names = status.vms.map((vm) => vm.name);
    const [first, second] = names;
    if (first && second)
      say(`\n== ${second}: ping -c 2 ${first}\n${await exec(daemon, second, `ping -c 2 ${first}`)}`);
    await wait("letting the workloads run", 6_000);
    status = (await daemon.request({ type: "status", workloads: true })) as ClusterStatus;
    say(`\n${formatStatus(status)}\n`);

    const name = `demo-${Date.now().toString(36)}`;
    const snap = await step("snapshot (consistent cut of every VM)", 3, (s) =>
      daemon.request({ type: "snapshot", name }, (note) => {
        if (note.step === "cut" || note.step === "commit") s.tick(1, note.step);
        else s.detail(`${note.step}${note.vm ? ` ${note.vm}` : ""}`);
      }),
    );
    const snapshot = snap as SnapshotReport;
    say(formatSnapshotReport(snapshot));
    const plan = (await daemon.request({ type: "snapshot-graph", name })) as SnapshotPlan;
    say(
      `   restore line: ${plan.line.order.map((group) => group.join(" + ")).join(" → ")} (receivers first)\n`,
    );

    const runs: RunRecord[] = [];
    for (const [index, { strategy, order }] of RUNS.entries()) {
      await dropPageCache(snapshot.path);
      const label = `${strategy} / ${order}`;
      const report = (await step(`restore ${index + 1}/${RUNS.length}: ${label}`, names.length, (s) =>
        daemon.request({ type: "restore", name, strategy, order }, (note) => {
          if (note.step === "started") s.tick(1, `${note.vm ?? ""} started`);
          else s.detail(`${note.step}${note.vm ? ` ${note.vm}` : ""}`);
        }),
      )) as RestoreReport;
      runs.push({ label, report });
    }
    say(`\n   guest uptimes after the last restore (back at the cut): ${await uptimes(daemon, names)}`);
    await wait("letting the restored cluster run", 3_000);
    status = (await daemon.request({ type: "status", workloads: true })) as ClusterStatus;
    const streams = status.vms.flatMap((vm) =>
      Object.entries(vm.workloads ?? {})
        .filter(([id]) => id.startsWith("stream-recv"))
        .map(([id, stats]) => {
          const s = stats as { connects?: number; seqErrors?: number };
          return `${vm.name} ${id}: connects ${String(s.connects)}, seq errors ${String(s.seqErrors)}`;
        }),
    );
    say(`   TCP flows after ${RUNS.length} restores (1 connect = never reconnected): ${streams.join("; ")}`);

    say(`\n== every restore of ${name} (cold page cache before each)\n`);
    say(comparison(runs));
    await writeReport(reportPath, {
      kind: "cluster",
      title: `HotRestore demo — ${runs.length} restores of one cluster snapshot`,
      generatedAt: new Date().toISOString(),
      host: { cpus: cpus().length, node: process.version, accel: status.accel },
      vms: status.vms.map((vm) => ({ name: vm.name, memoryMiB: vm.memoryMiB })),
      snapshot: { name, pauseMs: snapshot.pauseMs, storedBytes: snapshot.storedBytes },
      plan: { graph: plan.graph, line: plan.line },
      runs,
      definitions: DEFINITIONS,
    });
    say(`\nreport: ${reportPath}`);
    await daemon.request({ type: "snapshot-rm", name });
  } finally {
    say("\n== taking the cluster down");
    await daemon.request({ type: "down" }).catch(() => undefined);
    daemon.close();
  }
  say("done: no VM left running");
}

try {
  await main();
} catch (error) {
  stopBars();
  // Ctrl-C stops the daemon under the running step, which then fails: that is the interruption.
  if (interrupted) await interrupted;
  process.stderr.write(`demo failed: ${messageOf(error)}\n`);
  if (isHrError(error) && error.hint) process.stderr.write(`  what to do: ${error.hint}\n`);
  const daemon = await connectDaemon();
  await daemon?.request({ type: "down" }).catch(() => undefined);
  daemon?.close();
  await stopDaemon();
  process.exit(1);
}
