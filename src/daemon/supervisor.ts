/**
 * The daemon's supervisor: a worker thread (its own event loop) that bounds how long the daemon's
 * main event loop may be blocked. The main thread bumps a shared counter every HEARTBEAT_MS; if
 * the counter stands still for `timeoutMs`, the supervisor writes why to `diedFile` (read by the
 * CLI, which names the operation and the VMs whose pages were being served) and to the daemon
 * log, then SIGKILLs its own process: every QEMU dies with it (parent-death signal), so no
 * destination waits for pages from a wedged page server longer than this bound.
 *
 * Why a thread and not a watchdog in the CLI: a CLI may be gone (interrupted, or never waited),
 * and a separate supervisor process would need its own life-cycle; a thread dies with the daemon
 * and needs no event loop of the main thread to act.
 */
import { Worker } from "node:worker_threads";

export const HEARTBEAT_MS = 250;
export const DEFAULT_LOOP_TIMEOUT_MS = 30_000;

export interface SupervisorOptions {
  timeoutMs: number;
  /** JSON `{at, pid, message, vms}` written before the kill. */
  diedFile: string;
  logFile: string;
}

export type SupervisorNote =
  { type: "op"; op: string | undefined } | { type: "serving" | "ended"; vm: string };

export interface Supervisor {
  note(note: SupervisorNote): void;
}

// Plain JavaScript, evaluated in the worker: nothing there needs TypeScript.
const WORKER = `
const { workerData, parentPort } = require("node:worker_threads");
const fs = require("node:fs");
const beat = new Int32Array(workerData.heartbeat);
const serving = new Set();
let op;
let last = Atomics.load(beat, 0);
let changedAt = Date.now();
parentPort.on("message", (note) => {
  if (note.type === "op") op = note.op;
  else if (note.type === "serving") serving.add(note.vm);
  else if (note.type === "ended") serving.delete(note.vm);
});
setInterval(() => {
  const now = Atomics.load(beat, 0);
  if (now !== last) {
    last = now;
    changedAt = Date.now();
    return;
  }
  const blockedMs = Date.now() - changedAt;
  if (blockedMs < workerData.timeoutMs) return;
  const vms = [...serving].sort();
  const message =
    "the daemon's event loop was blocked for " + blockedMs + " ms" +
    (op ? " during " + op : "") +
    (vms.length > 0 ? " while serving pages of VM " + vms.join(", VM ") : "") +
    "; its supervisor killed it, and every QEMU it ran with it";
  try {
    fs.writeFileSync(workerData.diedFile, JSON.stringify({ at: new Date().toISOString(), pid: process.pid, message, vms }));
    fs.appendFileSync(workerData.logFile, JSON.stringify({ level: 60, time: Date.now(), pid: process.pid, msg: message }) + "\\n");
  } finally {
    process.kill(process.pid, "SIGKILL");
  }
}, Math.max(10, Math.min(1000, Math.floor(workerData.timeoutMs / 5))));
`;

export function startSupervisor(options: SupervisorOptions): Supervisor {
  const heartbeat = new SharedArrayBuffer(4);
  const beat = new Int32Array(heartbeat);
  const worker = new Worker(WORKER, {
    eval: true,
    workerData: {
      heartbeat,
      timeoutMs: options.timeoutMs,
      diedFile: options.diedFile,
      logFile: options.logFile,
    },
  });
  worker.unref();
  setInterval(() => Atomics.add(beat, 0, 1), HEARTBEAT_MS).unref();
  return { note: (note) => worker.postMessage(note) };
}
