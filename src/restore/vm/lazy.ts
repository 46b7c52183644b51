/**
 * Strategies `lazy`, `workingset` and `hotrestore` (DESIGN.md §5): the destination QEMU (started
 * paused with `-S -incoming defer`) loads the device state, then runs while the page server
 * answers its page faults first and streams every other page behind them.
 *   lazy        nothing before start; the rest in address order
 *   workingset  the snapshot's stored working set loaded before start (VMware VEE'11)
 *   hotrestore  the first W0 pages of the working set before start, then the elastic window
 *               (elastic-window.ts) over the rest of it, then address order
 *
 *   const load = loadLazy(vm, source, { strategy, workingSet });
 *   await load.prepared;                 // device state loaded; the VM is paused
 *   await vm.qmp.execute("cont"); load.markStarted();
 *   const { report, refinedWorkingSet } = await load.done;   // every page delivered
 *   await snapshot.replaceWorkingSet(vm.spec.name, refinedWorkingSet);
 *
 * Failures reject `prepared` and `done` with an HrError naming the VM (the page server's or the
 * store's code, e.g. SNAPSHOT_CORRUPT, PAGE_SERVER_STALLED; else RESTORE_LOAD_FAILED); the caller
 * stops QEMU (the page server has already closed its socket).
 */
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { HrError, messageOf } from "../../util/errors.ts";
import { connectUnixWithRetry } from "../../util/unix-socket.ts";
import type { Vm } from "../../vm/vm.ts";
import {
  DEFAULT_TUNING,
  PageServer,
  type PageServerOptions,
  type PageServerStats,
  type PageServerTuning,
} from "./page-server.ts";
import type { FaultRecord, Percentiles } from "./page-server-log.ts";
import { ElasticWindowPolicy, type ElasticStats, type ElasticWindowOptions } from "./elastic-window.ts";
import { AddressOrderPolicy, type PagePolicy } from "./page-server-policy.ts";
import type { PageServerSource } from "./page-server-read.ts";
import { PAGE_BYTES, type PageRef } from "./page-server-space.ts";
import { mergeFaultOrder, workingSetAccuracy, type WorkingSetAccuracy } from "./postcopy-working-set.ts";

export type LazyStrategy = "lazy" | "workingset" | "hotrestore";

export interface LazyOptions {
  strategy: LazyStrategy;
  /** The snapshot's working set: prefetched by `workingset`; recall is measured against it. */
  workingSet: readonly PageRef[];
  /** Checked copies of the working set's first pages (`data` holds workingSet[i] at i*4096). */
  workingSetCopies?: Buffer;
  /** process.hrtime.bigint() when the restore began (default: now). */
  t0Ns?: bigint;
  /** Bound on the whole load (connect → every page delivered). Default 600 s. */
  timeoutMs?: number;
  /** Faults this long after start count for recall (DESIGN.md §4). Default 3000 ms. */
  recallWindowMs?: number;
  tuning?: Partial<PageServerTuning>;
  /** Pages whose store chunks the server checks early (default: the working set). */
  checkAhead?: readonly PageRef[];
  /** Background order; default address order for lazy/workingset, the elastic window for hotrestore. */
  policy?: PagePolicy;
  /** hotrestore: working-set pages loaded before start (default DEFAULT_W0_PAGES). */
  w0Pages?: number;
  /** hotrestore: the window's tuning. */
  elastic?: Partial<ElasticWindowOptions>;
}

/**
 * W0 when the restore line gives none, and the least it gives: 1024 pages (4 MiB). Measured on one
 * 512 MiB VM (`mem` workload, working set 8,000–9,500 pages after refinement, cold page cache,
 * 2–3 runs each, this machine under load from other work), with the destination's transparent
 * huge pages off (see VmStartOptions.noTransparentHugepages: with THP on, each W0 page cost ~0.3 ms):
 *   W0 256              latency 325–570 ms, responsive 1.5–2.7 s
 *   W0 2048             latency 427–484 ms, responsive 1.8 s
 *   W0 = working set    latency 717–1210 ms, responsive 0.94–1.6 s
 * Loading the whole working set before start halves the time to responsiveness but costs
 * 0.4–0.8 s of latency (reading its scattered 64 KiB chunks cold is half of it: coalescing them
 * into range reads was slower, the working set touches most chunks of used memory). W0 stays
 * small for a lone VM; the restore line gives VMs that wait for others their slack as W0.
 * Since the working set file holds copies of its first pages (working-set-file.ts), measured again
 * on the same VM (working set 10,299 pages, one run each, alternating):
 *   W0 1024 (copied)    latency 409–531 ms, responsive 2.0–2.2 s
 *   W0 4096 (copied)    latency 570–674 ms, responsive 1.8–2.1 s
 *   W0 = working set    latency 619–665 ms, responsive 0.7–1.1 s (every page copied: the copy
 *                       limit, WORKING_SET_COPY_PAGES, raised to 16384 for this measurement)
 * The whole working set is now cheaper (+150–200 ms), but latency still rises by half, so the
 * default stays 1024 and `--w0` chooses more.
 */
export const DEFAULT_W0_PAGES = 1024;

/**
 * Refinement keeps the pages first faulted up to REFINE_WINDOW_MS after start (later faults are
 * the workload's steady state, e.g. the `mem` workload's random cold touches, not what it needs
 * first), and at most MAX_WORKING_SET_PAGES (128 MiB) in all: without both bounds the working set
 * grew with every restore (to ~9,900 pages after a dozen on one 512 MiB VM), and W0 with it.
 */
export const REFINE_WINDOW_MS = 2000;
export const MAX_WORKING_SET_PAGES = 32_768;

/** Distinct pages in first-fault order, of faults before start or up to REFINE_WINDOW_MS after. */
export function earlyFaultOrder(faults: readonly FaultRecord[], startedAtUs: number | undefined): PageRef[] {
  const limitUs =
    startedAtUs === undefined ? Number.POSITIVE_INFINITY : startedAtUs + REFINE_WINDOW_MS * 1000;
  const seen = new Set<string>();
  const out: PageRef[] = [];
  for (const fault of faults) {
    if (fault.atUs > limitUs) continue;
    const key = `${fault.blockId}\u0000${fault.page}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ blockId: fault.blockId, page: fault.page });
  }
  return out;
}

export interface LazyReport {
  strategy: LazyStrategy;
  prefetchPages: number;
  pagesBeforeStart: number;
  pagesAfterStart: number;
  bytesBeforeStart: number;
  bytesAfterStart: number;
  faults: number;
  faultsAfterStart: number;
  /** Served on demand: request received → page written to the socket. */
  faultServiceUs: Percentiles;
  workingSet: WorkingSetAccuracy;
  /** ms since t0 (undefined: not yet). */
  preparedMs: number | undefined;
  startedMs: number | undefined;
  doneMs: number | undefined;
  /** QEMU's own measure of vCPU time blocked on faults (postcopy-blocktime), ms. */
  blocktimeMs: number | undefined;
  server: PageServerStats;
  /** hotrestore: the window's size over time and what the faults said. */
  elastic: ElasticStats | undefined;
}

export interface LazyDone {
  report: LazyReport;
  /** Distinct pages in first-fault order. */
  faultOrder: PageRef[];
  /** Every page request, in arrival order. */
  faults: readonly FaultRecord[];
  /** The working set merged with the fault order: store it with replaceWorkingSet. */
  refinedWorkingSet: PageRef[];
}

export interface LazyLoad {
  prepared: Promise<void>;
  done: Promise<LazyDone>;
  markStarted(): void;
  report(): LazyReport | undefined;
  abort(why: string): void;
}

const CONNECT_TIMEOUT_MS = 10_000;
const PAUSED_TIMEOUT_MS = 30_000;

/** What loadLazy uses of a VM (a Vm fits): its QMP connection, its directory, its name. */
export type LazyVm = Pick<Vm, "qmp" | "dir"> & { spec: { name: string } };

export function loadLazy(vm: LazyVm, source: PageServerSource, options: LazyOptions): LazyLoad {
  const t0Ns = options.t0Ns ?? process.hrtime.bigint();
  const timeoutMs = options.timeoutMs ?? 600_000;
  const prefetch = prefetchOf(options);
  const policy = options.policy ?? defaultPolicy(options);
  let server: PageServer | undefined;
  let blocktimeMs: number | undefined;
  let aborted: string | undefined;
  const name = vm.spec.name;

  const report = (): LazyReport | undefined =>
    server === undefined ? undefined : buildReport(options, server, prefetch.length, blocktimeMs, policy);

  const prepared = (async () => {
    await vm.qmp.execute("migrate-set-capabilities", {
      capabilities: [
        { capability: "postcopy-ram", state: true },
        { capability: "postcopy-blocktime", state: true },
      ],
    });
    const path = join(vm.dir, "incoming.sock");
    await vm.qmp.execute("migrate-incoming", { uri: `unix:${path}` });
    const socket = await connectUnixWithRetry(path, CONNECT_TIMEOUT_MS);
    if (aborted !== undefined) {
      socket.destroy();
      throw new HrError("PAGE_SERVER_ABORTED", aborted);
    }
    server = PageServer.start({
      vm: name,
      socket,
      source,
      prefetch,
      checkAhead: options.checkAhead ?? options.workingSet,
      copies: copiesOf(options),
      policy,
      t0Ns,
      tuning: { doneTimeoutMs: timeoutMs, ...tuningFromEnv(), ...options.tuning },
    });
    await server.prepared;
    await waitRunState(vm, (status) => status !== "inmigrate", PAUSED_TIMEOUT_MS);
  })().catch((error: unknown) => {
    server?.abort(messageOf(error));
    throw loadFailed(name, error);
  });

  const done = prepared.then(async (): Promise<LazyDone> => {
    const running = server!;
    try {
      const result = await running.done;
      const info = await waitMigrationCompleted(vm, 60_000);
      blocktimeMs = info["postcopy-blocktime"];
      const faultOrder = result.faultOrder;
      return {
        report: buildReport(options, running, prefetch.length, blocktimeMs, policy),
        faultOrder,
        faults: result.faults,
        refinedWorkingSet: mergeFaultOrder(
          options.workingSet,
          earlyFaultOrder(result.faults, running.stats().startedAtUs),
          { prefetched: prefetch.length, maxPages: MAX_WORKING_SET_PAGES },
        ),
      };
    } catch (error) {
      throw loadFailed(name, error);
    }
  });
  // Either promise may be the only one the caller awaits.
  prepared.catch(() => undefined);
  done.catch(() => undefined);

  return {
    prepared,
    done,
    markStarted: () => server?.markStarted(),
    report,
    abort: (why: string) => {
      aborted = why;
      server?.abort(why);
    },
  };
}

/** `lazy` knows no working set, so it gets none of its copies either. */
function copiesOf(options: LazyOptions): PageServerOptions["copies"] {
  const data = options.workingSetCopies;
  if (options.strategy === "lazy" || data === undefined || data.length === 0) return undefined;
  return { refs: options.workingSet.slice(0, data.length / PAGE_BYTES), data };
}

function prefetchOf(options: LazyOptions): readonly PageRef[] {
  switch (options.strategy) {
    case "lazy":
      return [];
    case "workingset":
      return options.workingSet;
    case "hotrestore":
      return options.workingSet.slice(0, Math.max(0, options.w0Pages ?? DEFAULT_W0_PAGES));
  }
}

function defaultPolicy(options: LazyOptions): PagePolicy {
  return options.strategy === "hotrestore"
    ? new ElasticWindowPolicy(options.workingSet, options.elastic)
    : new AddressOrderPolicy();
}

function buildReport(
  options: LazyOptions,
  server: PageServer,
  prefetched: number,
  blocktimeMs: number | undefined,
  policy: PagePolicy,
): LazyReport {
  const stats = server.stats();
  const ms = (us: number | undefined): number | undefined =>
    us === undefined ? undefined : Math.round(us / 1000);
  return {
    strategy: options.strategy,
    prefetchPages: stats.prefetchPages,
    pagesBeforeStart: stats.pagesBeforeStart,
    pagesAfterStart: stats.pagesAfterStart,
    bytesBeforeStart: stats.bytesBeforeStart,
    bytesAfterStart: stats.bytesAfterStart,
    faults: stats.faults.faults,
    faultsAfterStart: stats.faults.faultsAfterStart,
    faultServiceUs: stats.faults.faultServiceUs,
    workingSet: workingSetAccuracy(options.workingSet, server.faults(), {
      prefetched,
      startedAtUs: stats.startedAtUs,
      windowMs: options.recallWindowMs ?? 3_000,
    }),
    preparedMs: ms(stats.preparedAtUs),
    startedMs: ms(stats.startedAtUs),
    doneMs: ms(stats.doneAtUs),
    blocktimeMs,
    server: stats,
    elastic: policy instanceof ElasticWindowPolicy ? policy.stats() : undefined,
  };
}

/**
 * Every failure names the VM. An HrError keeps its code (SNAPSHOT_CORRUPT, PAGE_SERVER_STALLED,
 * MIGRATION_FAILED, ...) so callers can match on it; anything else is RESTORE_LOAD_FAILED.
 */
function loadFailed(vm: string, error: unknown): HrError {
  const prefix = `VM ${vm}: lazy restore failed: `;
  if (error instanceof HrError && error.message.startsWith(prefix)) return error;
  const inner = messageOf(error).replace(`VM ${vm}: `, "");
  const code = error instanceof HrError ? error.code : "RESTORE_LOAD_FAILED";
  const hint = error instanceof HrError && error.hint !== undefined ? error.hint : "see the VM's qemu.log";
  return new HrError(code, `${prefix}${inner}`, { cause: error, hint });
}

async function waitRunState(vm: LazyVm, ok: (status: string) => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { status } = await vm.qmp.execute("query-status");
    if (ok(status)) return;
    if (Date.now() > deadline) {
      throw new HrError("RESTORE_LOAD_FAILED", `VM ${vm.spec.name}: still ${status} after ${timeoutMs} ms`);
    }
    await sleep(2);
  }
}

interface PostcopyMigrationInfo {
  status?: string;
  "error-desc"?: string;
  "postcopy-blocktime"?: number;
}

async function waitMigrationCompleted(vm: LazyVm, timeoutMs: number): Promise<PostcopyMigrationInfo> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const info = (await vm.qmp.executeRaw("query-migrate")) as PostcopyMigrationInfo;
    if (info.status === "completed") return info;
    if (info.status === "failed" || info.status === "cancelled") {
      throw new HrError(
        "MIGRATION_FAILED",
        `VM ${vm.spec.name}: migration ${info.status}: ${info["error-desc"] ?? ""}`,
      );
    }
    if (Date.now() > deadline) {
      throw new HrError("MIGRATION_TIMEOUT", `VM ${vm.spec.name}: migration still ${String(info.status)}`);
    }
    await sleep(20);
  }
}

/**
 * Measurement knob: HOTRESTORE_PAGE_SERVER_TUNING='{"inflightBytes":1048576}' overrides numeric
 * fields of the page server's tuning (page-server-types.ts), for benchmarks comparing settings.
 */
export function tuningFromEnv(env = process.env): Partial<PageServerTuning> {
  const text = env.HOTRESTORE_PAGE_SERVER_TUNING;
  if (!text) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new HrError("CONFIG_INVALID", "HOTRESTORE_PAGE_SERVER_TUNING is not JSON", {
      hint: `give an object of numbers, e.g. {"inflightBytes":1048576}; keys: ${Object.keys(DEFAULT_TUNING).join(", ")}`,
    });
  }
  const out: Record<string, number | boolean> = {};
  const defaults: Readonly<Record<string, unknown>> = DEFAULT_TUNING;
  for (const [key, value] of Object.entries(parsed as Record<string, unknown>)) {
    const fits =
      typeof defaults[key] === "boolean"
        ? typeof value === "boolean"
        : typeof value === "number" && Number.isFinite(value) && value >= 0;
    if (!(key in DEFAULT_TUNING) || !fits) {
      throw new HrError(
        "CONFIG_INVALID",
        `HOTRESTORE_PAGE_SERVER_TUNING: ${key} must be a known setting of its type (number ≥ 0, or true/false)`,
        {
          hint: `keys: ${Object.keys(DEFAULT_TUNING).join(", ")}`,
        },
      );
    }
    out[key] = value as number | boolean;
  }
  return out;
}
