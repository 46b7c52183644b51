/**
 * `hotrestore` — the command-line face. Thin: it validates what it can locally (a bad spec is
 * refused before a daemon or VM starts), turns the command into a control action, sends it to
 * the daemon and prints the reply (human text, or JSON with --json). Only this file exits.
 */
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { Command } from "commander";
import type { ClusterStatus } from "../cluster/cluster.ts";
import type { ExecReply } from "../control/controller.ts";
import { startHttpFace } from "../http/server.ts";
import { validateSpec } from "../spec/validate.ts";
import { HrError, isHrError, messageOf } from "../util/errors.ts";
import { connectDaemon, ensureDaemon, requestAction, type DaemonConnection } from "./daemon-client.ts";
import type { ActionInput } from "../control/actions.ts";
import type { SnapshotInspection } from "../control/controller.ts";
import type { RestoreReport } from "../restore/cluster/restore.ts";
import type { SnapshotReport } from "../snapshot/cut.ts";
import { checkSnapshotName, type SnapshotListEntry, type VerifyReport } from "../snapshot/store/index.ts";
import { planToDot, type SnapshotPlan } from "../restore/cluster/plan.ts";
import { ORDERS } from "../restore/cluster/start-gate.ts";
import { STRATEGIES } from "../restore/vm/strategy.ts";
import { PAGINGS } from "../restore/vm/kernel-paged.ts";
import { formatStatus } from "./format.ts";
import {
  formatInspect,
  formatPlan,
  formatRestoreReport,
  formatSnapshotList,
  formatSnapshotReport,
  listEntryJson,
} from "./format-snapshot.ts";

const program = new Command();
program
  .name("hotrestore")
  .description("Snapshot and restore whole clusters of QEMU VMs")
  .showHelpAfterError()
  .enablePositionalOptions();

function progressPrinter(json: boolean) {
  return (note: { step: string; vm?: string; detail?: string }) => {
    if (json) return;
    const who = note.vm ? ` ${note.vm}` : "";
    const detail = note.detail ? `: ${note.detail}` : "";
    process.stderr.write(`  ${note.step}${who}${detail}\n`);
  };
}

async function withDaemon<T>(
  connection: DaemonConnection,
  work: (c: DaemonConnection) => Promise<T>,
): Promise<T> {
  try {
    return await work(connection);
  } finally {
    connection.close();
  }
}

program
  .command("up")
  .description("boot a cluster from a spec; returns when every VM is ready")
  .argument("<spec>", "cluster spec (JSON)")
  .option("--json", "print JSON")
  .action(async (specPath: string, options: { json?: boolean }) => {
    let doc: unknown;
    try {
      doc = JSON.parse(await readFile(specPath, "utf8"));
    } catch (error) {
      throw new HrError("SPEC_UNREADABLE", `${specPath}: ${messageOf(error)}`, {
        hint: "give a readable JSON spec",
      });
    }
    validateSpec(doc, specPath);
    const started = Date.now();
    const status = (await withDaemon(await ensureDaemon(), (c) =>
      c.request({ type: "up", spec: doc, source: specPath }, progressPrinter(Boolean(options.json))),
    )) as ClusterStatus;
    if (options.json) console.log(JSON.stringify({ ...status, upMs: Date.now() - started }));
    else
      console.log(
        `${formatStatus(status)}\ncluster ${status.cluster} up in ${((Date.now() - started) / 1000).toFixed(1)} s`,
      );
  });

program
  .command("status")
  .description("VMs, state, accel, memory, IP, traffic between VMs")
  .option("--json", "print JSON")
  .option("--workloads", "also read every workload's statistics from the guests")
  .action(async (options: { json?: boolean; workloads?: boolean }) => {
    const connection = await connectDaemon();
    if (!connection) {
      if (options.json) console.log(JSON.stringify({ cluster: null, accel: null, vms: [], traffic: [] }));
      else console.log("no cluster is running");
      return;
    }
    const status = (await withDaemon(connection, (c) =>
      c.request({ type: "status", workloads: Boolean(options.workloads) }),
    )) as ClusterStatus;
    console.log(options.json ? JSON.stringify(status) : formatStatus(status));
  });

program
  .command("exec")
  .description("run a command in a guest; prints its output and exits with its exit code")
  .argument("<vm>", "VM name")
  .argument("<command...>", "command line (after --), run by the guest's shell")
  .option("--timeout <ms>", "kill the command after this many milliseconds", (v) => Number.parseInt(v, 10))
  .action(async (vm: string, words: string[], options: { timeout?: number }) => {
    const connection = await connectDaemon();
    if (!connection)
      throw new HrError("NO_CLUSTER", "no cluster is running", { hint: "hotrestore up <spec.json>" });
    const reply = (await withDaemon(connection, (c) =>
      c.request({
        type: "exec",
        vm,
        command: words.join(" "),
        ...(options.timeout === undefined ? {} : { timeoutMs: options.timeout }),
      }),
    )) as ExecReply;
    process.stdout.write(Buffer.from(reply.stdout, "base64"));
    process.stderr.write(Buffer.from(reply.stderr, "base64"));
    if (reply.timedOut) process.stderr.write(`hotrestore: command timed out in ${vm}\n`);
    process.exitCode = reply.exitCode;
  });

program
  .command("down")
  .description("stop everything; no QEMU process is left behind")
  .option("--json", "print JSON")
  .action(async (options: { json?: boolean }) => {
    const connection = await connectDaemon();
    if (!connection) {
      console.log(options.json ? JSON.stringify({ stopped: null }) : "no cluster is running");
      return;
    }
    const reply = (await withDaemon(connection, (c) => c.request({ type: "down" }))) as { stopped?: string };
    console.log(options.json ? JSON.stringify(reply) : `stopped ${reply.stopped ?? "nothing"}`);
  });

program
  .command("capture")
  .description("write every frame a VM sends or receives through the switch to a pcap file")
  .argument("<vm>", "VM name")
  .argument("<file>", "pcap file to write")
  .option("--seconds <n>", "how long to capture", (v) => Number.parseFloat(v), 5)
  .action(async (vm: string, file: string, options: { seconds: number }) => {
    const connection = await connectDaemon();
    if (!connection)
      throw new HrError("NO_CLUSTER", "no cluster is running", { hint: "hotrestore up <spec.json>" });
    const reply = (await withDaemon(connection, (c) =>
      c.request({ type: "capture", vm, file: resolve(file), seconds: options.seconds }),
    )) as { file: string; frames: number };
    console.log(`${reply.frames} frames written to ${reply.file}`);
  });

async function storeRequest(action: ActionInput): Promise<unknown> {
  // The snapshot store needs no daemon: read it in this process when none runs.
  return requestAction(action);
}

const snapshot = program
  .command("snapshot")
  .enablePositionalOptions()
  .description("take a consistent snapshot of the running cluster (or manage snapshots: see subcommands)")
  .option("--name <name>", "snapshot name (default snap-<time>)")
  .option("--json", "print JSON")
  .action(async (options: { name?: string; json?: boolean }) => {
    if (options.name !== undefined) checkSnapshotName(options.name);
    const connection = await connectDaemon();
    if (!connection)
      throw new HrError("NO_CLUSTER", "no cluster is running", { hint: "hotrestore up <spec.json>" });
    const report = (await withDaemon(connection, (c) =>
      c.request(
        { type: "snapshot", ...(options.name ? { name: options.name } : {}) },
        progressPrinter(Boolean(options.json)),
      ),
    )) as SnapshotReport;
    if (options.json) {
      console.log(JSON.stringify(report));
      return;
    }
    console.log(formatSnapshotReport(report));
  });

snapshot
  .command("inspect")
  .description("per VM: RAM, stored bytes, zero pages, working set, traffic graph, frames in flight")
  .argument("<name>")
  .option("--json", "print JSON")
  .action(async (name: string, options: { json?: boolean }) => {
    const summary = await storeRequest({ type: "snapshot-inspect", name });
    console.log(options.json ? JSON.stringify(summary) : formatInspect(summary as SnapshotInspection));
  });

snapshot
  .command("verify")
  .description("check every checksum; exit 1 and name the damage if any")
  .argument("<name>")
  .option("--json", "print JSON")
  .action(async (name: string, options: { json?: boolean }) => {
    const report = (await storeRequest({ type: "snapshot-verify", name })) as VerifyReport;
    if (options.json) console.log(JSON.stringify(report));
    else if (report.ok) console.log(`snapshot ${name}: every checksum is good`);
    else
      console.log(
        `snapshot ${name} is damaged:\n${report.damages.map((d) => `  ${d.file}: ${d.problem}`).join("\n")}`,
      );
    if (!report.ok) process.exitCode = 1;
  });

snapshot
  .command("graph")
  .description("the restore dependency graph (who talks to whom at the cut) and the planned restore line")
  .argument("<name>")
  .option("--dot", "print Graphviz DOT")
  .option("--json", "print JSON")
  .action(async (name: string, options: { dot?: boolean; json?: boolean }) => {
    const plan = (await storeRequest({ type: "snapshot-graph", name })) as SnapshotPlan;
    if (options.json) console.log(JSON.stringify(plan));
    else if (options.dot) console.log(planToDot(plan));
    else console.log(formatPlan(plan));
  });

snapshot
  .command("rm")
  .description("delete a snapshot")
  .argument("<name>")
  .action(async (name: string) => {
    await storeRequest({ type: "snapshot-rm", name });
    console.log(`removed ${name}`);
  });

program
  .command("snapshots")
  .description("list snapshots: name, time, VMs, size on disk, pause")
  .option("--json", "print JSON")
  .action(async (options: { json?: boolean }) => {
    const entries = (await storeRequest({ type: "snapshots" })) as SnapshotListEntry[];
    console.log(options.json ? JSON.stringify(entries.map(listEntryJson)) : formatSnapshotList(entries));
  });

program
  .command("restore")
  .description("replace the running cluster (or start one) with a snapshot's state")
  .argument("<name>", "snapshot name")
  .option("--strategy <strategy>", `how each VM's memory comes back: ${STRATEGIES.join(" | ")}`, "hotrestore")
  .option("--order <order>", `when each VM starts: ${ORDERS.join(" | ")}`, "restore-line")
  .option("--hold", "hold frames for VMs not yet running (default with restore-line)")
  .option("--no-hold", "drop frames for VMs not yet running, like a host bridge (default with the baselines)")
  .option(
    "--w0 <pages>",
    "hotrestore: working-set pages to load before start (default: the restore line's)",
    (v) => Number.parseInt(v, 10),
  )
  .option(
    "--paging <paging>",
    "hotrestore: how pages reach the guests: auto (kernel where FUSE mounts, else page-server) | kernel (page cache through a checked FUSE file; a later snapshot stops and copies these VMs) | page-server (QEMU post-copy; refines the working set)",
    "auto",
  )
  .option("--capture <dir>", "write each VM's frames during and after the restore to <dir>/<vm>.pcap")
  .option("--json", "print JSON")
  .action(
    async (
      name: string,
      options: {
        strategy: string;
        order: string;
        hold?: boolean;
        capture?: string;
        w0?: number;
        paging: string;
        json?: boolean;
      },
    ) => {
      checkSnapshotName(name); // refused here, before a daemon is started for it
      const paging = PAGINGS.find((known) => known === options.paging);
      if (paging === undefined) {
        throw new HrError("RESTORE_PAGING_UNKNOWN", `unknown paging '${options.paging}'`, {
          hint: `use one of: ${PAGINGS.join(", ")}`,
        });
      }
      const strategy = STRATEGIES.find((known) => known === options.strategy);
      if (strategy === undefined) {
        throw new HrError("RESTORE_STRATEGY_UNKNOWN", `unknown strategy '${options.strategy}'`, {
          hint: `use one of: ${STRATEGIES.join(", ")}`,
        });
      }
      const order = ORDERS.find((known) => known === options.order);
      if (order === undefined) {
        throw new HrError("RESTORE_ORDER_UNKNOWN", `unknown order '${options.order}'`, {
          hint: `use one of: ${ORDERS.join(", ")}`,
        });
      }
      const capture = options.capture === undefined ? undefined : resolve(options.capture);
      const action = {
        type: "restore" as const,
        name,
        strategy,
        order,
        hold: options.hold,
        capture,
        w0: options.w0,
        paging,
      };
      const report = (await withDaemon(await ensureDaemon(), (c) =>
        c.request(action, progressPrinter(Boolean(options.json))),
      )) as RestoreReport;
      console.log(options.json ? JSON.stringify(report) : formatRestoreReport(report));
    },
  );

program
  .command("serve")
  .description("HTTP API + web page on 127.0.0.1 (token printed at start): cluster, snapshots, live restores")
  .option("--port <n>", "TCP port (0: any free one)", (v) => Number.parseInt(v, 10), 8470)
  .option("--host <addr>", "address to bind (keep it local: the token is the only guard)", "127.0.0.1")
  .action(async (options: { port: number; host: string }) => {
    if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) {
      throw new HrError("ARGUMENT_INVALID", `--port ${String(options.port)} is not a TCP port`, {
        hint: "give 1-65535, or 0 for any free port",
      });
    }
    const token = randomBytes(24).toString("base64url");
    const face = await startHttpFace({
      token,
      port: options.port,
      host: options.host,
      run: (action, progress) => requestAction(action, progress),
    });
    console.log(`HotRestore web page: ${face.url}`);
    console.log(`API token (Authorization: Bearer <token>): ${token}`);
    await new Promise<void>((resolve) => {
      for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => resolve());
    });
    await face.close();
  });

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (isHrError(error)) {
    process.stderr.write(`hotrestore: ${error.message}\n`);
    if (error.hint) process.stderr.write(`  what to do: ${error.hint}\n`);
    process.exit(error.code === "SPEC_INVALID" ? 2 : 1);
  }
  process.stderr.write(`hotrestore: unexpected error: ${messageOf(error)}\n`);
  process.exit(1);
}
