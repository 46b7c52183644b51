/**
 * `npm run demo` — the main job. Today: boots the default cluster (examples/default.json), shows
 * it working (workload statistics, ping and TCP traffic through our switch, the traffic matrix),
 * snapshots it, lets it run on, restores it (strategy full: QEMU's eager restore, the baseline of
 * the strategies to come) and shows every guest back at the cut with its TCP flows unbroken, then
 * tears it down. Ctrl-C at any moment takes the cluster down.
 */
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import type { ClusterStatus } from "../cluster/cluster.ts";
import type { ExecReply } from "../control/controller.ts";
import { connectDaemon, ensureDaemon, type DaemonConnection } from "../cli/daemon-client.ts";
import { formatStatus } from "../cli/format.ts";
import { formatRestoreReport, formatSnapshotReport } from "../cli/format-snapshot.ts";
import type { RestoreReport } from "../restore/cluster/restore.ts";
import type { SnapshotReport } from "../snapshot/cut.ts";
import { isHrError, messageOf } from "../util/errors.ts";
import { stateDir } from "../util/paths.ts";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const specPath = process.argv[2] ?? join(ROOT, "examples", "default.json");
process.env.HOTRESTORE_HOME ??= join(stateDir(), "demo");

function say(text: string): void {
  process.stdout.write(`${text}\n`);
}

async function exec(daemon: DaemonConnection, vm: string, command: string): Promise<string> {
  const reply = (await daemon.request({ type: "exec", vm, command, timeoutMs: 30_000 })) as ExecReply;
  return Buffer.from(reply.stdout, "base64").toString("utf8").trim();
}

async function down(): Promise<void> {
  const daemon = await connectDaemon();
  if (!daemon) return;
  await daemon.request({ type: "down" }).catch(() => undefined);
  daemon.close();
}

let interrupted = false;
process.on("SIGINT", () => {
  if (interrupted) return;
  interrupted = true;
  say("\ninterrupted: taking the cluster down");
  down().then(
    () => process.exit(130),
    () => process.exit(130),
  );
});

async function main(): Promise<void> {
  const spec = JSON.parse(await readFile(specPath, "utf8")) as { vms: { name: string }[] };
  say(`== HotRestore demo: booting ${specPath} (${spec.vms.length} VMs)`);
  const daemon = await ensureDaemon();
  try {
    const started = Date.now();
    let status = (await daemon.request({ type: "up", spec, source: specPath }, (note) =>
      say(`   ${note.step}${note.vm ? ` ${note.vm}` : ""}${note.detail ? `: ${note.detail}` : ""}`),
    )) as ClusterStatus;
    say(`== every VM ready in ${((Date.now() - started) / 1000).toFixed(1)} s (accel ${status.accel})\n`);

    const [first, second] = status.vms;
    if (first && second) {
      say(`== ${second.name}: ping -c 3 ${first.name}`);
      say(await exec(daemon, second.name, `ping -c 3 ${first.name}`));
    }
    say("\n== letting the workloads run for 5 s");
    await sleep(5_000);
    status = (await daemon.request({ type: "status", workloads: true })) as ClusterStatus;
    say(formatStatus(status));
    say(`\n== TCP flows seen by the switch: ${status.flows.length}`);

    const name = `demo-${Date.now().toString(36)}`;
    say(
      `\n== snapshot ${name} (consistent cut: switch held, every VM stopped together, memory saved in the background)`,
    );
    const snap = (await daemon.request({ type: "snapshot", name })) as SnapshotReport;
    say(formatSnapshotReport(snap));
    const uptime = async (): Promise<string> =>
      (
        await Promise.all(
          status.vms.map(
            async (vm) =>
              `${vm.name} ${(await exec(daemon, vm.name, "cut -d' ' -f1 /proc/uptime")).trim()} s`,
          ),
        )
      ).join(", ");
    await sleep(3_000);
    say(`   3 s later, guest uptimes: ${await uptime()}`);
    say(`\n== restore ${name} --strategy full`);
    const restored = (await daemon.request({ type: "restore", name, strategy: "full" })) as RestoreReport;
    say(formatRestoreReport(restored));
    say(`   guest uptimes after the restore (back at the cut): ${await uptime()}`);
    await sleep(3_000);
    status = (await daemon.request({ type: "status", workloads: true })) as ClusterStatus;
    const streams = status.vms.flatMap((vm) =>
      Object.entries(vm.workloads ?? {})
        .filter(([id]) => id.startsWith("stream-recv"))
        .map(
          ([id, stats]) =>
            `${vm.name} ${id}: connects ${String((stats as { connects?: number }).connects)}, seq errors ${String((stats as { seqErrors?: number }).seqErrors)}`,
        ),
    );
    say(`   TCP flows after the restore (1 connect = never reconnected): ${streams.join("; ")}`);
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
  process.stderr.write(`demo failed: ${messageOf(error)}\n`);
  if (isHrError(error) && error.hint) process.stderr.write(`  what to do: ${error.hint}\n`);
  await down();
  process.exit(1);
}
