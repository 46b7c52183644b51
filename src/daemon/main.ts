/**
 * The daemon: one process that owns the switch and every QEMU process. Started by the CLI
 * (`hotrestore up`), it listens on <state>/daemon.sock (mode 0600) and exits once the cluster has
 * been taken down. QEMU children are started with a parent-death signal, so a `kill -9` of this
 * process takes them down too.
 */
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Controller } from "../control/controller.ts";
import { onPageServer } from "../restore/vm/page-server-events.ts";
import { messageOf } from "../util/errors.ts";
import { faultKnob, FAULT_ENV } from "../util/faults.ts";
import { fileLogger } from "../util/log.ts";
import { cacheDir, guestDir, stateDir } from "../util/paths.ts";
import { listenControl } from "./server.ts";
import { DEFAULT_LOOP_TIMEOUT_MS, startSupervisor } from "./supervisor.ts";

const state = stateDir();
await mkdir(state, { recursive: true, mode: 0o700 });
const log = fileLogger(join(state, "daemon.log"));
const socketPath = join(state, "daemon.sock");
const pidFile = join(state, "daemon.pid");
/** The operations the supervisor names when the event loop is found blocked. */
const LONG_OPS = new Set(["up", "down", "snapshot", "restore"]);
const diedFile = join(state, "daemon.died");
await rm(diedFile, { force: true });
// A blocked event loop is bounded: the supervisor kills this process (and so every QEMU).
const supervisor = startSupervisor({
  timeoutMs: faultKnob("loop-timeout-ms") ?? DEFAULT_LOOP_TIMEOUT_MS,
  diedFile,
  logFile: join(state, "daemon.log"),
});
onPageServer((event) => {
  if (event.state === "fault") {
    log.warn({ vm: event.vm, fault: event.fault, point: event.point }, `${FAULT_ENV}: fault injected`);
  } else {
    supervisor.note({ type: event.state, vm: event.vm });
  }
});
const controller = new Controller({ stateDir: state, cacheDir: cacheDir(), guestDir: guestDir(), log });
controller.prepare().catch((error: unknown) => log.error({ err: error }, "prepare"));

let exiting = false;
async function exit(code: number, why: string): Promise<void> {
  if (exiting) return;
  exiting = true;
  log.info({ why }, "daemon exiting");
  await controller.shutdown().catch((error: unknown) => log.error({ err: error }, "shutdown"));
  server.close();
  await rm(socketPath, { force: true });
  await rm(pidFile, { force: true });
  process.exit(code);
}

const server = await listenControl(socketPath, controller, log, (action) => {
  const type = actionType(action);
  if (LONG_OPS.has(type ?? "")) supervisor.note({ type: "op", op: undefined });
  // The daemon lives as long as a cluster does: after `down` (or a failed `up`) it leaves.
  if ((type === "down" || type === "up" || type === "restore") && !controller.hasCluster) {
    setTimeout(() => void exit(0, `no cluster after ${String(type)}`), 100);
  }
});
server.on("request", (action: unknown) => {
  if (!LONG_OPS.has(actionType(action) ?? "")) return;
  const name = (action as { name?: unknown }).name;
  const op = `${actionType(action) ?? "a request"}${typeof name === "string" ? ` ${name}` : ""}`;
  supervisor.note({ type: "op", op });
});
await writeFile(pidFile, `${process.pid}\n`);
log.info({ socketPath, pid: process.pid }, "daemon listening");

for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
  process.on(signal, () => void exit(0, signal));
}
process.on("uncaughtException", (error) => {
  log.fatal({ err: error }, `uncaught exception: ${messageOf(error)}`);
  void exit(1, "uncaught exception");
});

function actionType(action: unknown): string | undefined {
  const type =
    typeof action === "object" && action !== null ? (action as { type?: unknown }).type : undefined;
  return typeof type === "string" ? type : undefined;
}
