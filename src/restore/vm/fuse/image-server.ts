import { closeSync, constants, openSync, writevSync } from "node:fs";
import { mkdir, open, readFile, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import type { Worker } from "node:worker_threads";
import {
  CHUNK_PAGES,
  chunkCount,
  PAGE_SIZE,
  RANGE_CHUNKS,
  readCheckedSpanSync,
  type VmMemoryReader,
} from "../../../snapshot/store/index.ts";
import { HrError, messageOf } from "../../../util/errors.ts";
import { abortFuse, connectionOf, mountFuse, unmountFuse } from "./mount.ts";
import { listen, returnFuseWorker, takeFuseWorker } from "./worker-pool.ts";
import { FILE_NODE } from "./responder.ts";
import { encodeNotifyStoreHeader } from "./wire.ts";
import type { WorkerInit, WorkerMessage } from "./worker-types.ts";

/**
 * One guest RAM image served through FUSE (DESIGN.md §5, the kernel-paging backend of
 * `hotrestore`): the kernel asks for what is not in its page cache (the worker thread answers with
 * checked bytes, worker.ts), and we put pages there ahead of the guest with NOTIFY_STORE (`store`).
 * QEMU maps `path` MAP_PRIVATE like the `mmap` strategy maps the raw image, so a guest's access
 * to a page already stored is a minor fault the kernel serves alone: no exit to QEMU, no round
 * trip to us.
 *
 * Every byte that reaches the page cache was checked against the snapshot's chunk sums first
 * (worker: before it answers; `store`: before it writes). A damaged chunk answers EIO, which the
 * guest's QEMU takes as SIGBUS: the restore fails, and the damaged bytes never reach the guest.
 *
 * Deadlock rule: a NOTIFY_STORE waits for the lock of every page it fills, and a page under a READ
 * the kernel sent us is locked until that READ is answered. So stores are never written by the
 * thread that answers READs (the worker): the main thread writes them, synchronously (a 1 MiB
 * store is one read, 16 checks and one write: ~1 ms; through libuv's thread pool each took a
 * round trip, and 3,000 scattered W0 runs took 300 ms instead of 10).
 */

const CHUNK_BYTES = CHUNK_PAGES * PAGE_SIZE;
/** Kernel read-ahead on a miss: 128 KiB, two chunks (bigger reads cost the faulting guest more). */
const DEFAULT_MAX_READAHEAD = 128 * 1024;
/**
 * Largest READ: 64 KiB, one chunk. Chosen while QEMU's MADV_HUGEPAGE made the kernel read the 2 MiB
 * around every miss (a process mapping the file without it, or a kernel-paged QEMU since
 * native/qemu-no-thp.c, reads one page). Hand runs, 512 MiB VM: in 1 MiB READs fault service p99
 * was 5-6 ms, in 128 KiB ones 2.2-3.2 ms, in 64 KiB ones (with 256 KiB stores) 1.9-2.1 ms.
 */
const MAX_PAGES = 16;
/**
 * The stall bound: a request unanswered this long (s) makes the kernel abort the connection (FUSE
 * 7.43 request timeouts; the kernel's minimum is 15 s and it checks every 15 s, so a stalled worker
 * is noticed within 15-30 s, like the page server's 30 s). A QEMU waiting on a miss then gets
 * SIGBUS, and the worker's read of the device fails: the restore fails naming the VM.
 */
export const REQUEST_TIMEOUT_SEC = 15;

export interface ServedRead {
  /** ms since the restore command */
  atMs: number;
  serviceUs: number;
  offset: number;
  size: number;
}

export interface FuseImageOptions {
  vm: string;
  memory: VmMemoryReader;
  blockId: string;
  /** An empty directory to mount on (created if missing). */
  mountDir: string;
  /** performance.now() of the restore command: `reads` are timed from it. */
  commandAt: number;
  maxReadahead?: number;
  /** Default REQUEST_TIMEOUT_SEC. */
  requestTimeoutSec?: number;
  /** Tests: the worker answers no READ, as if it stalled. */
  stallReads?: boolean;
}

export class FuseImageServer {
  readonly path: string;
  readonly reads: ServedRead[] = [];
  /** Bytes put into the page cache by `store` (checked first). */
  storedBytes = 0;
  readonly #options: FuseImageOptions;
  readonly #deviceFd: number;
  readonly #worker: Worker;
  readonly #verified: Uint8Array;
  readonly #table: ReturnType<VmMemoryReader["chunkTable"]>;
  /** true: the worker said "ended" (it can serve again); false: it exited. */
  readonly #workerEnded: Promise<boolean>;
  #pin: FileHandle | undefined;
  #syncFd: number | undefined;
  /** The FUSE connection's number (fusectl), from mountinfo once mounted. */
  #connection: number | undefined;
  /** Set first thing by close(): stores are refused from then on (the device may be reused). */
  #closed = false;
  readonly #span = Buffer.allocUnsafe(RANGE_CHUNKS * CHUNK_BYTES);
  #failure: HrError | undefined;
  #onFailure: ((error: HrError) => void) | undefined;
  #closing: Promise<void> | undefined;

  private constructor(
    options: FuseImageOptions,
    deviceFd: number,
    worker: Worker,
    verified: SharedArrayBuffer,
  ) {
    this.#options = options;
    this.#deviceFd = deviceFd;
    this.#worker = worker;
    this.#verified = new Uint8Array(verified);
    this.#table = options.memory.chunkTable(options.blockId);
    this.path = join(options.mountDir, fileNameOf(options.blockId));
    this.#workerEnded = new Promise((resolve) => {
      const forget = listen(worker, {
        message: (message) => {
          if (message.type !== "ended") return this.#message(message);
          forget();
          resolve(true);
        },
        error: (error) => this.#fail(`its FUSE worker failed: ${messageOf(error)}`),
        exit: () => {
          forget();
          resolve(false);
        },
      });
    });
  }

  /** Mounts the image at `mountDir` and opens it once (the kernel then knows the file: stores work). */
  static async start(options: FuseImageOptions): Promise<FuseImageServer> {
    const table = options.memory.chunkTable(options.blockId);
    await mkdir(options.mountDir, { recursive: true });
    const deviceFd = openSync("/dev/fuse", constants.O_RDWR);
    const verified = new SharedArrayBuffer(chunkCount(table.pages));
    const init: WorkerInit = {
      deviceFd,
      fileName: fileNameOf(options.blockId),
      rawPath: table.path,
      label: table.label,
      pages: table.pages,
      sums: new Uint8Array(table.sums),
      verified,
      mtimeSec: Math.floor(Date.now() / 1000),
      maxReadahead: options.maxReadahead ?? DEFAULT_MAX_READAHEAD,
      maxPages: MAX_PAGES,
      requestTimeoutSec: options.requestTimeoutSec ?? REQUEST_TIMEOUT_SEC,
      ...(options.stallReads === true ? { stallReads: true } : {}),
    };
    try {
      await mountFuse(deviceFd, options.mountDir, MAX_PAGES * PAGE_SIZE);
    } catch (error) {
      closeSync(deviceFd);
      throw error;
    }
    // After the mount: a read of the device before it fails (EPERM). The kernel's INIT waits.
    let worker: Worker;
    try {
      worker = await takeFuseWorker();
    } catch (error) {
      await unmountFuse(options.mountDir);
      closeSync(deviceFd);
      throw error;
    }
    worker.ref();
    worker.postMessage(init);
    const server = new FuseImageServer(options, deviceFd, worker, verified);
    try {
      server.#connection = connectionOf(await readFile("/proc/self/mountinfo", "utf8"), options.mountDir);
      // A worker that dies before INIT would leave this open waiting forever: race its end.
      const pin = open(server.path, "r");
      const ended = server.#workerEnded.then(() => {
        throw new HrError(
          "RESTORE_FAILED",
          `VM ${options.vm}: its FUSE worker ended before the mount answered`,
        );
      });
      server.#pin = await Promise.race([pin, ended]);
    } catch (error) {
      await server.close();
      throw error;
    }
    return server;
  }

  /** Called once if the image fails (damage, or the worker stops): the restore must stop the VM. */
  onFailure(listener: (error: HrError) => void): void {
    this.#onFailure = listener;
    if (this.#failure) listener(this.#failure);
  }

  /** close() has begun: nothing more will be stored. */
  get closed(): boolean {
    return this.#closed;
  }

  get failure(): HrError | undefined {
    return this.#failure;
  }

  #fail(message: string, code = "RESTORE_FAILED"): void {
    if (this.#failure || this.#closing) return;
    this.#failure = new HrError(code, `VM ${this.#options.vm}: ${message}`, {
      hint: "run `hotrestore snapshot verify` on the snapshot; a damaged one must be taken again",
    });
    this.#onFailure?.(this.#failure);
  }

  #message(message: WorkerMessage): void {
    switch (message.type) {
      case "read":
        this.reads.push({
          atMs: message.atMs - performance.timeOrigin - this.#options.commandAt,
          serviceUs: message.serviceUs,
          offset: message.offset,
          size: message.size,
        });
        if (message.error !== undefined) {
          this.#fail(
            `page ${Math.floor(message.offset / PAGE_SIZE)} was not given to the guest: ${message.error}`,
            "SNAPSHOT_CORRUPT",
          );
        }
        return;
      case "failed":
        this.#fail(message.message);
        return;
      case "warm":
      case "ended":
        return;
    }
  }

  /** Has chunk `chunk` been checked (by a store or by the worker)? */
  isChecked(chunk: number): boolean {
    return this.#verified[chunk] === 1;
  }

  /** Does chunk `chunk` hold any stored (non-zero) page? */
  hasData(chunk: number): boolean {
    const first = chunk * CHUNK_PAGES;
    const end = Math.min(first + CHUNK_PAGES, this.#table.pages);
    for (let page = first; page < end; page++) if (this.#table.isPresent(page)) return true;
    return false;
  }

  get chunks(): number {
    return chunkCount(this.#table.pages);
  }

  /**
   * Puts `data` (checked bytes of the image) into the page cache at `offset` (page-aligned), on
   * this thread: one write of the device. It can wait for a page lock while the worker answers a
   * READ under it, never for this thread (the deadlock rule above is about the worker's thread).
   */
  storeBytes(offset: number, data: Buffer): void {
    if (this.#closed)
      throw new HrError("RESTORE_FAILED", `VM ${this.#options.vm}: its guest RAM file system is closed`);
    writevSync(this.#deviceFd, [encodeNotifyStoreHeader(FILE_NODE, offset, data.length), data]);
    this.storedBytes += data.length;
  }

  /** Reads and checks chunks [first, first+count) (one positional read) and stores them. */
  storeChunks(first: number, count: number): void {
    if (this.#closed)
      throw new HrError("RESTORE_FAILED", `VM ${this.#options.vm}: its guest RAM file system is closed`);
    this.#syncFd ??= openSync(this.#table.path, "r");
    const bytes = readCheckedSpanSync(
      this.#syncFd,
      this.#table.label,
      this.#table.pages,
      this.#table.sums,
      { first, count },
      this.#span,
      // The worker's policy too: a chunk checked once is read again without hashing it again.
      {
        checked: (chunk) => this.#verified[chunk] === 1,
        markChecked: (chunk) => (this.#verified[chunk] = 1),
      },
    );
    writevSync(this.#deviceFd, [
      encodeNotifyStoreHeader(FILE_NODE, first * CHUNK_BYTES, bytes.length),
      bytes,
    ]);
    this.storedBytes += bytes.length;
  }

  /**
   * Unmounts, ends the connection (fusectl abort: a QEMU that still maps the file gets SIGBUS on
   * its next miss instead of waiting, and a dead worker cannot hang our own close), gives the
   * worker back to the pool once it says "ended", and closes the device. Idempotent; never throws.
   */
  close(): Promise<void> {
    this.#closed = true;
    this.#closing ??= (async () => {
      await unmountFuse(this.#options.mountDir);
      if (this.#connection !== undefined) await abortFuse(this.#connection);
      await this.#pin?.close().catch(() => undefined);
      if (this.#syncFd !== undefined) closeSync(this.#syncFd);
      this.#syncFd = undefined;
      const ended = await Promise.race([
        this.#workerEnded,
        new Promise<boolean | undefined>((resolve) => setTimeout(() => resolve(undefined), 2_000).unref()),
      ]);
      if (ended === true) returnFuseWorker(this.#worker);
      else await this.#worker.terminate().catch(() => undefined);
      try {
        closeSync(this.#deviceFd);
      } catch {
        // closed already
      }
    })();
    return this.#closing;
  }
}

/** The served file's name: the block's id made one path component (ids such as "0000:00:02.0/vga.vram" hold slashes). */
function fileNameOf(blockId: string): string {
  return `${encodeURIComponent(blockId)}.raw`;
}
