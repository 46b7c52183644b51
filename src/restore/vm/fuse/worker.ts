import { closeSync, openSync, readlinkSync, readSync, writevSync } from "node:fs";
import { setPriority } from "node:os";
import { parentPort } from "node:worker_threads";
import { CHUNK_PAGES, PAGE_SIZE } from "../../../snapshot/store/layout.ts";
import { readCheckedSpanSync } from "../../../snapshot/store/raw-image.ts";
import { messageOf } from "../../../util/errors.ts";
import { FuseFileResponder } from "./responder.ts";
import type { WorkerInit, WorkerMessage } from "./worker-types.ts";

/**
 * The FUSE worker: a thread of its own that reads the kernel's requests from /dev/fuse (a blocking
 * read(2): the thread does nothing else) and answers them, READs with the snapshot's checked
 * bytes. Its own thread, so a guest's page-cache miss is served even while the daemon's event loop
 * is busy (switch, QMP, the pushes of notify-store.ts), and never queues behind libuv's thread pool.
 * It ends when the file system is unmounted (ENODEV). Chunks it checks are marked in the shared
 * `verified` array, which the main thread's pushes read and mark too.
 *
 * Life: loaded ahead of need (worker-pool.ts: loading takes ~0.35 s, too long for a restore to
 * wait), it says "warm", then serves one WorkerInit's mount at a time, saying "ended" after each;
 * the pool takes it back for the next restore.
 */
const port = parentPort;
if (port === null) throw new Error("worker.ts runs as a worker thread");
const post = (message: WorkerMessage): void => port.postMessage(message);
// One mount at a time; "ended" after each, and the pool may hand this thread the next one.
port.on("message", (init: WorkerInit) => {
  try {
    serve(init);
  } catch (error) {
    post({ type: "failed", message: `its FUSE worker stopped: ${messageOf(error)}` });
  } finally {
    post({ type: "ended" });
  }
});
post({ type: "warm" });

const WORKER_NICE = -10;

/**
 * This thread runs ahead of the guests' vCPUs and of our own fill (nice -10, root only): a guest
 * waits for every miss it serves, and on 2 cores busy with TCG vCPUs a thread of default weight
 * waited several ms for a slot (fault service p99 6-12 ms, against ~1 ms once raised).
 */
function raisePriority(nice: number): boolean {
  try {
    const tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
    setPriority(tid, nice);
    return true;
  } catch {
    return false;
  }
}

function serve(init: WorkerInit): void {
  raisePriority(WORKER_NICE);
  const CHUNK_BYTES = CHUNK_PAGES * PAGE_SIZE;
  const verified = new Uint8Array(init.verified);
  const sums = Buffer.from(init.sums);
  const image = openSync(init.rawPath, "r");
  const span = Buffer.allocUnsafe(init.maxPages * PAGE_SIZE + 2 * CHUNK_BYTES);

  function readChecked(offset: number, size: number): Buffer {
    const first = Math.floor(offset / CHUNK_BYTES);
    const end = Math.ceil((offset + size) / CHUNK_BYTES);
    const bytes = readCheckedSpanSync(
      image,
      init.label,
      init.pages,
      sums,
      { first, count: end - first },
      span,
      {
        checked: (chunk) => verified[chunk] === 1,
        markChecked: (chunk) => {
          verified[chunk] = 1;
        },
      },
    );
    const at = offset - first * CHUNK_BYTES;
    return bytes.subarray(at, at + size);
  }

  const responder = new FuseFileResponder(
    { name: init.fileName, size: init.pages * PAGE_SIZE, mtimeSec: init.mtimeSec },
    { maxReadahead: init.maxReadahead, maxPages: init.maxPages, requestTimeoutSec: init.requestTimeoutSec },
    readChecked,
  );

  // A request is at most a WRITE of max_write (4 KiB) plus headers; the kernel wants >= 8 KiB.
  const request = Buffer.allocUnsafe(64 * 1024);
  const RETRY = new Set(["EINTR", "EAGAIN", "ENOENT"]);
  const nowMs = (): number => performance.timeOrigin + performance.now();

  for (;;) {
    let length: number;
    try {
      length = readSync(init.deviceFd, request, 0, request.length, null);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? "";
      if (RETRY.has(code)) continue;
      // ENODEV: the connection ended. Ours on close (then the failure is ignored), or the kernel's
      // when a request went unanswered for the request timeout.
      post({
        type: "failed",
        message:
          code === "ENODEV"
            ? `the connection of its guest RAM file system ended${
                responder.requestTimeoutSec === null
                  ? ""
                  : ` (the kernel ends it when a request waits more than ${responder.requestTimeoutSec} s: the FUSE worker stalled)`
              }`
            : `reading /dev/fuse: ${messageOf(error)}`,
      });
      break;
    }
    const receivedAt = nowMs();
    let reply;
    try {
      reply = responder.handle(request.subarray(0, length));
    } catch (error) {
      post({ type: "failed", message: `FUSE request refused: ${messageOf(error)}` });
      break;
    }
    if (init.stallReads === true && responder.lastRead !== undefined) continue;
    if (reply !== undefined) {
      try {
        writevSync(init.deviceFd, reply);
      } catch (error) {
        // ENOENT: the request was interrupted meanwhile (the kernel no longer waits for it).
        if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
          post({ type: "failed", message: `answering /dev/fuse: ${messageOf(error)}` });
          break;
        }
      }
    }
    const read = responder.lastRead;
    if (read !== undefined) {
      post({
        type: "read",
        atMs: receivedAt,
        serviceUs: Math.round((nowMs() - receivedAt) * 1000),
        offset: read.offset,
        size: read.size,
        ...(read.error === undefined ? {} : { error: messageOf(read.error) }),
      });
    }
  }
  closeSync(image);
}
