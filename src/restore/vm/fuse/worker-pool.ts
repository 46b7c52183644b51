import { Worker } from "node:worker_threads";
import type { WorkerMessage } from "./worker-types.ts";

/**
 * FUSE workers loaded ahead of need. Loading one (a thread, tsx's loader, our modules) takes
 * ~0.35 s of CPU here: on a restore's path that would be most of hotrestore's latency. The
 * daemon warms `warmFuseWorkers(n)` when it starts; each restore takes one per VM and gives it
 * back when the VM's mount ends. An idle worker does not keep the process alive.
 */

const ENTRY = new URL("./worker-entry.mjs", import.meta.url);

const idle: Worker[] = [];
let loading = 0;
let target = 0;

function load(): Promise<Worker> {
  loading++;
  const worker = new Worker(ENTRY);
  worker.unref();
  return new Promise<Worker>((resolve, reject) => {
    const onMessage = (message: WorkerMessage): void => {
      if (message.type !== "warm") return;
      worker.off("message", onMessage);
      worker.off("error", reject);
      resolve(worker);
    };
    worker.on("message", onMessage);
    worker.once("error", reject);
  }).finally(() => {
    loading--;
  });
}

function refill(): void {
  while (idle.length + loading < target) {
    load().then(
      (worker) => idle.push(worker),
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
  return idle.shift() ?? (await load());
}

/** A worker whose mount ended ("ended"), ready for the next one. */
export function returnFuseWorker(worker: Worker): void {
  worker.removeAllListeners("message");
  worker.removeAllListeners("error");
  worker.removeAllListeners("exit");
  worker.unref();
  idle.push(worker);
}
