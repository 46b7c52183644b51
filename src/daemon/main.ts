/**
 * The daemon: one process that owns the switch and every QEMU process. Started by the CLI
 * (`hotrestore up`), it listens on <state>/daemon.sock (mode 0600) and exits once the cluster has
 * been taken down. QEMU children are started with a parent-death signal, so a `kill -9` of this
 * process takes them down too.
 */
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Controller } from "../control/controller.ts";
import { messageOf } from "../util/errors.ts";
import { fileLogger } from "../util/log.ts";
import { cacheDir, guestDir, stateDir } from "../util/paths.ts";
import { listenControl } from "./server.ts";

const state = stateDir();
await mkdir(state, { recursive: true, mode: 0o700 });
const log = fileLogger(join(state, "daemon.log"));
const socketPath = join(state, "daemon.sock");
const pidFile = join(state, "daemon.pid");
const controller = new Controller({ stateDir: state, cacheDir: cacheDir(), guestDir: guestDir(), log });

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
  const type =
    typeof action === "object" && action !== null ? (action as { type?: unknown }).type : undefined;
  // The daemon lives as long as a cluster does: after `down` (or a failed `up`) it leaves.
  if ((type === "down" || type === "up" || type === "restore") && !controller.hasCluster) {
    setTimeout(() => void exit(0, `no cluster after ${String(type)}`), 100);
  }
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
