import { Worker } from "node:worker_threads";
import type { WorkerMessage } from "./worker-types.ts";

/**
 * FUSE workers loaded ahead of need. Loading one (a thread, tsx's loader, our modules) takes
 * ~0.35 s of CPU here: on a restore's path that would be most of hotrestore's latency. The
 * daemon warms `warmFuseWorkers(n)` when it starts; each restore takes one per VM and the pool
 * loads replacements in the background. An idle worker does not keep the process alive.
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

/** A loaded worker (waiting for its WorkerInit), taken from the pool or loaded now. */
export async function takeFuseWorker(): Promise<Worker> {
  const ready = idle.shift();
  const worker = ready ?? (await load());
  refill();
  return worker;
}
