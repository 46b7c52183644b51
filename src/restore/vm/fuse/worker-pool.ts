import { Worker } from "node:worker_threads";
import type { WorkerMessage } from "./worker-types.ts";

/**
 * FUSE workers loaded ahead of need. Loading one (a thread, tsx's loader, our modules) takes
 * ~0.35 s of CPU here. A restore on kernel paging asks for one per VM (`warmFuseWorkers`, before
 * its QEMUs start), takes them and gives each back when its VM's mount ends, so later restores
 * load none. An idle worker does not keep the process alive.
 */

const ENTRY = new URL("./worker-entry.mjs", import.meta.url);

const idle: Worker[] = [];
let loading = 0;
let target = 0;

/**
 * Attaches a worker's three listeners; the returned function removes exactly these. Only our own:
 * removeAllListeners() also took Node's, and the worker's messages then arrived only once it had
 * ended.
 */
export function listen(
  worker: Worker,
  on: {
    message: (message: WorkerMessage) => void;
    error: (error: Error) => void;
    exit: (code: number) => void;
  },
): () => void {
  worker.on("message", on.message);
  worker.on("error", on.error);
  worker.on("exit", on.exit);
  return () => {
    worker.off("message", on.message);
    worker.off("error", on.error);
    worker.off("exit", on.exit);
  };
}

function load(): Promise<Worker> {
  loading++;
  const worker = new Worker(ENTRY);
  worker.unref();
  return new Promise<Worker>((resolve, reject) => {
    const onMessage = (message: WorkerMessage): void => {
      if (message.type !== "warm") return;
      forget();
      resolve(worker);
    };
    const forget = listen(worker, {
      message: onMessage,
      error: (error) => {
        forget();
        reject(error);
      },
      exit: (code) => {
        forget();
        reject(new Error(`a FUSE worker exited while loading (code ${code})`));
      },
    });
  }).finally(() => {
    loading--;
  });
}

/** The listeners that drop a parked worker from the pool if it dies. */
const parked = new Map<Worker, () => void>();

/** Idle workers leave the pool if they die (an idle thread's error must not end the daemon). */
function park(worker: Worker): void {
  const drop = (): void => {
    const at = idle.indexOf(worker);
    if (at >= 0) idle.splice(at, 1);
    unpark(worker);
  };
  worker.on("error", drop);
  worker.on("exit", drop);
  parked.set(worker, drop);
  worker.unref();
  idle.push(worker);
}

function unpark(worker: Worker): void {
  const drop = parked.get(worker);
  if (drop === undefined) return;
  worker.off("error", drop);
  worker.off("exit", drop);
  parked.delete(worker);
}

function refill(): void {
  while (idle.length + loading < target) {
    load().then(
      (worker) => park(worker),
      () => undefined, // the next take() loads its own and reports why
    );
  }
}

/** Keep at least `count` workers loaded from now on. */
export function warmFuseWorkers(count: number): void {
  target = Math.max(target, count);
  refill();
}

/**
 * A loaded worker (waiting for its WorkerInit), taken from the pool or loaded now. Nothing is
 * loaded in its place meanwhile: loading four at the start of a 4-VM restore took the CPU the
 * QEMUs needed (cluster restore latency 1.9-3.7 s instead of ~1.1 s); `returnFuseWorker` gives it
 * back once its mount has ended.
 */
export async function takeFuseWorker(): Promise<Worker> {
  const worker = idle.shift() ?? (await load());
  unpark(worker);
  return worker;
}

/** A worker whose mount ended ("ended"), ready for the next one: its server removed its listeners. */
export function returnFuseWorker(worker: Worker): void {
  park(worker);
}
