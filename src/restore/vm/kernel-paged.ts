import { join } from "node:path";
import { quantile } from "../../metrics/stats.ts";
import { CHUNK_PAGES, PAGE_SIZE } from "../../snapshot/store/index.ts";
import { HrError, messageOf } from "../../util/errors.ts";
import { RAM_BLOCK_ID } from "../../vm/argv.ts";
import { FuseImageServer, type ServedRead } from "./fuse/image-server.ts";
import { DEFAULT_W0_PAGES, earlyFaultOrder, MAX_WORKING_SET_PAGES } from "./lazy.ts";
import { loadMmap } from "./mmap.ts";
import type { FaultRecord } from "./page-server-log.ts";
import type { PageRef } from "./page-server-space.ts";
import { mergeFaultOrder } from "./postcopy-working-set.ts";
import type { VmRestoreContext, VmRestoreFigures, VmRestoreHandle } from "./strategy.ts";
import { faultHistogram, stallTtr } from "./strategy-figures.ts";

/**
 * `hotrestore` on kernel paging (DESIGN.md §5; the "elastic policy on top of kernel
 * paging"): guest RAM is the snapshot's image mapped copy-on-write like `mmap`, but through our
 * FUSE file (fuse/image-server.ts), so that
 *
 *   - every page the kernel hands the guest was checked against the snapshot's chunk sums
 *     (mmap can only promise that by reading the whole image before start);
 *   - we fill the page cache ahead of the guest: W0 working-set pages before start (from the
 *     working set file's copies, checked with the file), then after start the rest of the working
 *     set in its order, then every stored chunk in address order. A guest access to a filled page
 *     is a minor fault: no vCPU exit, no round trip to us;
 *   - a page not filled yet is a page-cache miss the FUSE worker serves from its own thread: one
 *     READ of the page the guest touched. We ask for no read-ahead, and QEMU runs with
 *     native/qemu-no-thp.c preloaded: its MADV_HUGEPAGE on guest RAM made the kernel read the
 *     2 MiB around every miss (hand runs, 512 MiB VM, 4 alternated pairs in one daemon, with
 *     against without: fault service p50 57-71 against 99-146 µs, p99 1.75-2.0 against 2.0-2.8 ms,
 *     time to responsiveness 592-799 against 667-847 ms).
 *
 * W0 is the restore line's, as on the page server (DEFAULT_W0_PAGES). Hand runs, 512 MiB VM,
 * refined working set: W0 1024 latency 311-400 ms, responsive 0.87-1.08 s; W0 4096 (every copied
 * page) 461-520 ms and 0.89-1.01 s: storing more before start bought nothing the fill does not.
 *
 * The window is unbounded: after start the fill runs as fast as it can. With post-copy every
 * background page costs the destination a UFFDIO_COPY in its listen thread and competes with
 * urgent pages on one socket, so the page server keeps a window; a page-cache fill costs the
 * guest nothing and does not delay a miss (the worker answers misses, the main thread fills).
 * Measured: see the README's restore table and DEFAULT_W0 below.
 *
 * The VM depends on the mount for its whole life (a page the kernel evicts is read again through
 * it), like `mmap` depends on the raw image: the mount ends when the VM's QEMU exits.
 */

/**
 * Chunks per store after start: 4 (256 KiB). Hand runs, 512 MiB VM, 3 each: 16 chunks gave fault
 * service p99 3.1-3.3 ms (a 1 MiB store holds the disk and the CPU while a guest waits for a READ),
 * 4 chunks with READs of 64 KiB 1.9-2.1 ms, for a time to responsiveness 0.05-0.1 s longer.
 */
const FILL_CHUNKS = 4;

export type Paging = "kernel" | "page-server";
export const PAGINGS = ["auto", "kernel", "page-server"] as const;

/** Chunks of the image not in the page cache yet, in fill order: working set first, then address. */
export function fillOrder(
  workingSetPages: readonly number[],
  chunks: number,
  hasData: (chunk: number) => boolean,
): { first: number; count: number }[] {
  const queued = new Uint8Array(chunks);
  const out: { first: number; count: number }[] = [];
  const add = (chunk: number): void => {
    queued[chunk] = 1;
    const last = out[out.length - 1];
    if (last !== undefined && last.first + last.count === chunk && last.count < FILL_CHUNKS) last.count++;
    else out.push({ first: chunk, count: 1 });
  };
  for (const page of workingSetPages) {
    const chunk = Math.floor(page / CHUNK_PAGES);
    if (chunk < chunks && queued[chunk] !== 1) add(chunk);
  }
  for (let chunk = 0; chunk < chunks; chunk++) if (queued[chunk] !== 1 && hasData(chunk)) add(chunk);
  return out;
}

/** Coalesces sorted page numbers into runs of adjacent pages. */
export function pageRuns(pages: readonly number[]): { first: number; count: number }[] {
  const sorted = [...new Set(pages)].sort((a, b) => a - b);
  const runs: { first: number; count: number }[] = [];
  for (const page of sorted) {
    const last = runs[runs.length - 1];
    if (last !== undefined && last.first + last.count === page) last.count++;
    else runs.push({ first: page, count: 1 });
  }
  return runs;
}

export function kernelPagedRestore(ctx: VmRestoreContext): VmRestoreHandle {
  const vm = ctx.vm;
  const name = vm.spec.name;
  const sinceCommand = (): number => performance.now() - ctx.commandAt;
  let server: FuseImageServer | undefined;
  let workingSet: PageRef[] = [];
  let w0 = 0;
  let w0Bytes = 0;
  let streamPages = 0;
  let streamBytes = 0;
  let loadMs = 0;
  let startedMs: number | undefined;
  let storedAtStart = 0;
  let doneMs: number | undefined;
  let prefetchMs: { read: number; write: number } | null = null;
  let failWith: (error: HrError) => void = () => undefined;
  const failed = new Promise<never>((_, reject) => {
    failWith = reject;
  });
  failed.catch(() => undefined);
  let markStarted: () => void = () => undefined;
  const startedSignal = new Promise<void>((resolve) => {
    markStarted = resolve;
  });

  const ready = (async () => {
    const { entries, copies } = await ctx.snapshot.workingSetWithCopies(name);
    workingSet = entries;
    const memory = ctx.source.memory;
    server = await FuseImageServer.start({
      vm: name,
      memory,
      blockId: RAM_BLOCK_ID,
      mountDir: join(vm.dir, "ram-fuse"),
      commandAt: ctx.commandAt,
      maxReadahead: 0,
    });
    const running = server;
    running.onFailure((error) => {
      failWith(error);
      // Unmount and end the connection first: a vCPU waiting on a miss then gets SIGBUS instead of
      // waiting forever, so QEMU can be stopped (a process blocked in a FUSE read cannot be killed).
      void running.close().then(() => vm.stop());
    });
    try {
      w0 = Math.min(entries.length, Math.max(0, ctx.w0Pages ?? DEFAULT_W0_PAGES));
      const fillW0 = storeW0(running, entries.slice(0, w0), copies);
      fillW0.catch(() => undefined);
      const report = await Promise.race([
        loadMmap(
          vm,
          { ...ctx.start, noTransparentHugepages: true, noHugepageAdvice: true },
          ctx.source,
          ctx.snapshot,
          {
            verify: "off",
            ramPath: running.path,
            timeoutMs: ctx.timeoutMs,
          },
        ),
        failed,
      ]);
      vm.afterExit(() => running.close());
      loadMs = report.loadMs;
      streamPages = report.pages;
      streamBytes = report.bytes;
      const timing = await Promise.race([fillW0, failed]);
      w0Bytes = timing.bytes;
      prefetchMs = { read: timing.readMs, write: timing.writeMs };
      storedAtStart = running.storedBytes;
    } catch (error) {
      if (vm.pid === undefined) await running.close();
      else vm.afterExit(() => running.close());
      throw running.failure ?? (error instanceof HrError ? error : loadFailed(name, error));
    }
  })();
  ready.catch(() => undefined);

  const finished = ready.then(async () => {
    await Promise.race([startedSignal, failed]);
    const running = server!;
    const ramPages = workingSet.filter((ref) => ref.blockId === RAM_BLOCK_ID).map((ref) => ref.page);
    const order = fillOrder(ramPages.slice(w0), running.chunks, (chunk) => running.hasData(chunk));
    await Promise.race([fillInOrder(running, order), failed]);
    // The fill ends early when the mount closed: by our stop, or because QEMU died on its own.
    if (running.closed && vm.state === "failed") {
      throw new HrError(
        "VM_EXITED",
        `VM ${name}: QEMU exited during the restore, before its memory was all in`,
        {
          hint: `its log: ${join(vm.dir, "qemu.log")}`,
        },
      );
    }
    doneMs = sinceCommand();
  });
  finished.catch(() => undefined);

  const faults = (): FaultRecord[] => faultLog(server?.reads ?? [], startedMs);

  return {
    ready,
    started: () => {
      startedMs = sinceCommand();
      markStarted();
    },
    finished,
    figures: (): VmRestoreFigures => {
      const reads = server?.reads ?? [];
      const after = reads.filter((read) => startedMs !== undefined && read.atMs >= startedMs);
      const before = reads.filter((read) => startedMs === undefined || read.atMs < startedMs);
      const bytesOf = (list: readonly ServedRead[]): number => list.reduce((sum, read) => sum + read.size, 0);
      const storedAfter = (server?.storedBytes ?? 0) - storedAtStart;
      const service = after.map((read) => read.serviceUs);
      const log = faults();
      const startedAtUs = startedMs === undefined ? undefined : startedMs * 1000;
      const bytesBeforeStart = streamBytes + w0Bytes + bytesOf(before);
      const bytesAfterStart = storedAfter + bytesOf(after);
      return {
        loadMs,
        pagesBeforeStart: streamPages + Math.ceil((w0Bytes + bytesOf(before)) / PAGE_SIZE),
        pagesAfterStart: Math.ceil(bytesAfterStart / PAGE_SIZE),
        bytesBeforeStart,
        bytesAfterStart,
        faults: after.length,
        faultServiceUs:
          service.length === 0 ? null : { p50: quantile(service, 0.5), p99: quantile(service, 0.99) },
        // Not observable here: a page filled ahead is never asked for, so misses show only the
        // accesses the fill had not reached.
        workingSet: null,
        doneMs: doneMs === undefined ? null : Math.round(doneMs),
        faultTtrMs: stallTtr(log, startedAtUs),
        window: null,
        faultsPer100ms: faultHistogram(log),
        backgroundWaitsMs: null,
        prefetchMs,
        paging: "kernel",
      };
    },
    // As on the page server (lazy.ts): W0, then the pages first missed up to REFINE_WINDOW_MS
    // after start, then the rest of the old working set. A miss is one READ of the page the guest
    // touched (native/qemu-no-thp.c), of a page neither W0 nor the fill had stored yet.
    refinedWorkingSet: () =>
      doneMs === undefined
        ? undefined
        : mergeFaultOrder(
            workingSet,
            earlyFaultOrder(
              faults().filter((fault) => fault.afterStart),
              startedMs === undefined ? undefined : startedMs * 1000,
            ),
            { prefetched: w0, maxPages: MAX_WORKING_SET_PAGES },
          ),
  };
}

/** The misses the worker served, as a fault log (one record per READ: read-ahead is off). */
function faultLog(reads: readonly ServedRead[], startedMs: number | undefined): FaultRecord[] {
  return reads.map((read) => ({
    atUs: read.atMs * 1000,
    blockId: RAM_BLOCK_ID,
    page: Math.floor(read.offset / PAGE_SIZE),
    inFlight: false,
    alreadySent: false,
    serviceUs: read.serviceUs,
    afterStart: startedMs !== undefined && read.atMs >= startedMs,
    servedBy: "read",
  }));
}

/**
 * W0 into the page cache: the pages the working set file holds copies of come from the copies
 * (checked with the file when it was read), coalesced into runs of adjacent pages; the others
 * from checked chunk reads.
 */
async function storeW0(
  server: FuseImageServer,
  refs: readonly PageRef[],
  copies: Buffer | undefined,
): Promise<{ bytes: number; readMs: number; writeMs: number }> {
  const copied = new Map<number, Buffer>();
  const uncopied: number[] = [];
  refs.forEach((ref, index) => {
    if (ref.blockId !== RAM_BLOCK_ID) return;
    const at = index * PAGE_SIZE;
    if (copies !== undefined && at + PAGE_SIZE <= copies.length)
      copied.set(ref.page, copies.subarray(at, at + PAGE_SIZE));
    else uncopied.push(ref.page);
  });
  const writeFrom = performance.now();
  let bytes = 0;
  for (const run of pageRuns([...copied.keys()])) {
    const data = Buffer.concat(
      Array.from({ length: run.count }, (_, i) => copied.get(run.first + i) ?? Buffer.alloc(PAGE_SIZE)),
    );
    server.storeBytes(run.first * PAGE_SIZE, data);
    bytes += data.length;
  }
  const writeMs = performance.now() - writeFrom;
  const readFrom = performance.now();
  const chunks = fillOrder(uncopied, server.chunks, () => false).filter(
    (range) => !server.isChecked(range.first),
  );
  await fillInOrder(server, chunks);
  bytes += chunks.reduce((sum, range) => sum + range.count * CHUNK_PAGES * PAGE_SIZE, 0);
  return { bytes, readMs: Math.round(performance.now() - readFrom), writeMs: Math.round(writeMs) };
}

/**
 * Stores the ranges in order, yielding to the event loop between ranges (the daemon's switch
 * forwards frames on it: a range holds it ~1 ms). Tried and dropped (hand runs, 512 MiB VM): reading
 * two ranges ahead on the thread pool (disk and hashing overlapped) and pausing while the worker
 * answers a READ; both made fault service p99 worse (3-3.8 ms against 2.2-3 ms) and the fill slower.
 * Also dropped (4 alternated pairs, 512 MiB VM): moving the 2 MiB around each miss to the front of
 * the fill; responsiveness 574-718 against 475-625 ms, fault p99 2.1-2.9 against 1.0-1.3 ms.
 */
async function fillInOrder(
  server: FuseImageServer,
  order: readonly { first: number; count: number }[],
): Promise<void> {
  for (const planned of order) {
    // Trimmed now: the worker may have served part of it meanwhile.
    const range = trimChecked(server, planned);
    if (server.failure) throw server.failure;
    if (server.closed) return; // the VM stopped (its QEMU exited): nothing left to fill
    if (range.count === 0) continue;
    server.storeChunks(range.first, range.count);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * Drops the range's leading and trailing chunks checked already (stored, or read by the worker).
 * A miss brings in one page of its chunk; its other pages then miss too, but cheaply (checked
 * chunk, bytes in the snapshot file's page cache). Storing such chunks again was measured and
 * dropped (3 alternated pairs, 512 MiB VM): the same time to responsiveness (644-735 against
 * 707-762 ms), fault service p50 ~235 against ~60 µs and p99 3-9 against ~1 ms.
 */
function trimChecked(
  server: FuseImageServer,
  range: { first: number; count: number },
): { first: number; count: number } {
  let first = range.first;
  let end = range.first + range.count;
  while (first < end && server.isChecked(first)) first++;
  while (end > first && server.isChecked(end - 1)) end--;
  return { first, count: end - first };
}

function loadFailed(vm: string, error: unknown): HrError {
  return new HrError("RESTORE_LOAD_FAILED", `VM ${vm}: loading its state failed: ${messageOf(error)}`, {
    cause: error,
  });
}
