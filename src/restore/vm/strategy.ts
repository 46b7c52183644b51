import type { SnapshotReader } from "../../snapshot/store/index.ts";
import type { Vm, VmStartOptions } from "../../vm/vm.ts";
import { loadFull } from "./full.ts";
import { loadLazy, type LazyStrategy } from "./lazy.ts";
import type { FaultRecord } from "./page-server-log.ts";
import { HrError } from "../../util/errors.ts";
import { fuseUnavailable } from "./fuse/mount.ts";
import { kernelPagedRestore, type Paging } from "./kernel-paged.ts";
import { loadMmap } from "./mmap.ts";
import { faultHistogram, stallTtr } from "./strategy-figures.ts";
import type { VmStreamSource } from "./stream-source.ts";

/**
 * The one interface every restore strategy of a single VM offers the cluster orchestrator
 * (DESIGN.md §5). `ready` settles when the VM is paused with enough state to run; the
 * orchestrator sends `cont` (at the time the restore line says) and calls `started()`;
 * `finished` settles when every page is in. `figures()` is the per-VM report.
 */
export const STRATEGIES = ["full", "mmap", "lazy", "workingset", "hotrestore"] as const;
export type Strategy = (typeof STRATEGIES)[number];

export interface Percentiles {
  p50: number;
  p99: number;
}

export interface VmRestoreFigures {
  loadMs: number;
  pagesBeforeStart: number;
  pagesAfterStart: number;
  bytesBeforeStart: number;
  bytesAfterStart: number;
  faults: number;
  faultServiceUs: Percentiles | null;
  workingSet: { recall: number | null; waste: number | null } | null;
  /** Background loading done, ms after the restore command (null: nothing loads after start). */
  doneMs: number | null;
  /**
   * Generic time to responsiveness (DESIGN.md §9): the first 100 ms window after start with fault
   * stalls under 10%, ms after the command; null for strategies whose faults we do not see.
   */
  faultTtrMs: number | null;
  /** hotrestore: the window's size over time (ms after the command, pages). */
  window: { atMs: number; pages: number; why: string }[] | null;
  /** Faults served on demand after start, per 100 ms after the command (null: not seen). */
  faultsPer100ms: number[] | null;
  /** Page server: where its background loop waited (ms): PING window, socket queue, policy, reads. */
  backgroundWaitsMs: { window: number; queue: number; pause: number; read: number } | null;
  /** Page server: W0 before start, ms reading + checking its pages and writing them. */
  prefetchMs: { read: number; write: number } | null;
  /** hotrestore: how its pages reach the guest (kernel-paged.ts); null for the other strategies. */
  paging: Paging | null;
}

export interface VmRestoreHandle {
  ready: Promise<void>;
  started(): void;
  finished: Promise<void>;
  figures(): VmRestoreFigures;
  /** The working set refined by this restore's fault order, to store in the snapshot (lazy kinds). */
  refinedWorkingSet(): { blockId: string; page: number }[] | undefined;
}

export interface VmRestoreContext {
  vm: Vm;
  start: Omit<VmStartOptions, "incoming" | "ramBackend">;
  snapshot: SnapshotReader;
  source: VmStreamSource;
  /** performance.now() of the restore command. */
  commandAt: number;
  timeoutMs: number;
  /** hotrestore: working-set pages to load before start (the restore line's W0). */
  w0Pages?: number;
  /**
   * hotrestore: "auto" (the default: kernel paging where FUSE can be mounted, else the page
   * server), "kernel" or "page-server". Kernel paging reaches responsiveness sooner (README); a
   * VM on it maps a file, so a later snapshot stops and copies it (snapshot/cut.ts), and it does
   * not refine the working set.
   */
  paging?: Paging | "auto";
}

function settled<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}

const NO_FIGURES: VmRestoreFigures = {
  loadMs: 0,
  pagesBeforeStart: 0,
  pagesAfterStart: 0,
  bytesBeforeStart: 0,
  bytesAfterStart: 0,
  faults: 0,
  faultServiceUs: null,
  workingSet: null,
  doneMs: null,
  faultTtrMs: null,
  window: null,
  faultsPer100ms: null,
  backgroundWaitsMs: null,
  prefetchMs: null,
  paging: null,
};

function eager(
  ctx: VmRestoreContext,
  load: () => Promise<{ loadMs: number; bytes: number; pages: number }>,
): VmRestoreHandle {
  let figures: VmRestoreFigures = NO_FIGURES;
  const ready = settled(
    load().then((report) => {
      figures = {
        ...figures,
        loadMs: report.loadMs,
        pagesBeforeStart: report.pages,
        bytesBeforeStart: report.bytes,
      };
    }),
  );
  return {
    ready,
    started: () => undefined,
    finished: ready,
    figures: () => figures,
    refinedWorkingSet: () => undefined,
  };
}

export function restoreVm(strategy: Strategy, ctx: VmRestoreContext): VmRestoreHandle {
  switch (strategy) {
    case "full":
      return eager(ctx, async () => {
        await ctx.vm.start({ ...ctx.start, incoming: true });
        return loadFull(ctx.vm, ctx.source, ctx.timeoutMs);
      });
    case "mmap":
      return eager(ctx, () =>
        loadMmap(ctx.vm, ctx.start, ctx.source, ctx.snapshot, {
          verify: "before-start",
          timeoutMs: ctx.timeoutMs,
        }),
      );
    case "lazy":
    case "workingset":
      return lazyKind(strategy, ctx);
    case "hotrestore":
      return hotrestore(ctx);
  }
}

/** hotrestore on the paging ctx.paging asks for (probed: "auto" falls back to the page server). */
function hotrestore(ctx: VmRestoreContext): VmRestoreHandle {
  let inner: VmRestoreHandle | undefined;
  const chosen = (async () => {
    const wanted = ctx.paging ?? "auto";
    if (wanted === "page-server") return lazyKind("hotrestore", ctx);
    const why = await fuseUnavailable();
    if (why === undefined) return kernelPagedRestore(ctx);
    if (wanted === "kernel") {
      throw new HrError(
        "RESTORE_PAGING_UNAVAILABLE",
        `VM ${ctx.vm.spec.name}: kernel paging is not available here: ${why}`,
        {
          hint: "use --paging page-server (QEMU post-copy), or run the daemon as root with /dev/fuse",
        },
      );
    }
    return lazyKind("hotrestore", ctx);
  })();
  const ready = settled(
    chosen.then(async (handle) => {
      inner = handle;
      await handle.ready;
    }),
  );
  return {
    ready,
    started: () => inner?.started(),
    finished: settled(ready.then(() => inner!.finished)),
    figures: () => inner?.figures() ?? NO_FIGURES,
    refinedWorkingSet: () => inner?.refinedWorkingSet(),
  };
}

function lazyKind(strategy: LazyStrategy, ctx: VmRestoreContext): VmRestoreHandle {
  const t0Ns = process.hrtime.bigint() - BigInt(Math.round((performance.now() - ctx.commandAt) * 1e6));
  let load: ReturnType<typeof loadLazy> | undefined;
  let refined: { blockId: string; page: number }[] | undefined;
  let faults: readonly FaultRecord[] = [];
  const ready = settled(
    (async () => {
      const { entries: workingSet, copies } = await ctx.snapshot.workingSetWithCopies(ctx.vm.spec.name);
      await ctx.vm.start({ ...ctx.start, incoming: true, noTransparentHugepages: true });
      load = loadLazy(ctx.vm, ctx.source, {
        strategy,
        workingSet,
        workingSetCopies: copies,
        t0Ns,
        timeoutMs: ctx.timeoutMs,
        w0Pages: ctx.w0Pages,
      });
      await load.prepared;
    })(),
  );
  const finished = settled(
    ready.then(async () => {
      const done = await (load as NonNullable<typeof load>).done;
      refined = done.refinedWorkingSet;
      faults = done.faults;
    }),
  );
  return {
    ready,
    started: () => load?.markStarted(),
    finished,
    figures: () => {
      const report = load?.report();
      return {
        loadMs: report?.preparedMs ?? 0,
        pagesBeforeStart: report?.pagesBeforeStart ?? 0,
        pagesAfterStart: report?.pagesAfterStart ?? 0,
        bytesBeforeStart: report?.bytesBeforeStart ?? 0,
        bytesAfterStart: report?.bytesAfterStart ?? 0,
        faults: report?.faultsAfterStart ?? 0,
        faultServiceUs: report ? { p50: report.faultServiceUs.p50, p99: report.faultServiceUs.p99 } : null,
        workingSet: report ? { recall: report.workingSet.recall, waste: report.workingSet.waste } : null,
        doneMs: report?.doneMs ?? null,
        faultTtrMs: report ? stallTtr(faults, report.server.startedAtUs) : null,
        window:
          report?.elastic?.window.map((sample) => ({
            atMs: Math.round(sample.atUs / 1000),
            pages: sample.pages,
            why: sample.why,
          })) ?? null,
        faultsPer100ms: report ? faultHistogram(faults) : null,
        backgroundWaitsMs: report?.server.backgroundWaitsMs ?? null,
        prefetchMs: report?.server.prefetchMs ?? null,
        paging: strategy === "hotrestore" ? "page-server" : null,
      };
    },
    refinedWorkingSet: () => refined,
  };
}
