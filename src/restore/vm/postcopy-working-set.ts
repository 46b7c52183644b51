/**
 * Working-set refinement and accuracy from a post-copy restore's fault log (DESIGN.md §4). Pure.
 *
 * What a fault log can and cannot see: a page the guest touches faults only if it had not arrived
 * yet. So in a run that prefetched nothing, the first faults are the guest's first accesses
 * (exact, until background pages overtake the guest); pages loaded before start never fault,
 * so their use is invisible. Both functions take `prefetched`, the number of leading working-set
 * entries that were loaded before start, and say which figures are exact.
 */
import type { FaultRecord } from "./page-server-log.ts";
import type { PageRef } from "./page-server-space.ts";

const key = (ref: PageRef): string => `${ref.blockId}\u0000${ref.page}`;

export interface MergeOptions {
  /** Leading entries of `previous` that were loaded before start (they preceded every fault). */
  prefetched: number;
  /** Keep at most this many entries (the tail is dropped). */
  maxPages?: number;
}

/**
 * The refined working set: the prefetched part of the previous one (needed before any fault),
 * then the pages in first-fault order, then the rest of the previous one that did not fault
 * (background loading may have delivered them before the guest touched them, so they are kept,
 * behind). Deduplicated, first occurrence wins.
 */
export function mergeFaultOrder(
  previous: readonly PageRef[],
  faultOrder: readonly PageRef[],
  options: MergeOptions,
): PageRef[] {
  const prefetched = Math.max(0, Math.min(options.prefetched, previous.length));
  const limit = options.maxPages ?? Number.POSITIVE_INFINITY;
  const seen = new Set<string>();
  const out: PageRef[] = [];
  const add = (refs: readonly PageRef[]): void => {
    for (const ref of refs) {
      if (out.length >= limit) return;
      const id = key(ref);
      if (seen.has(id)) continue;
      seen.add(id);
      out.push({ blockId: ref.blockId, page: ref.page });
    }
  };
  add(previous.slice(0, prefetched));
  add(faultOrder);
  add(previous.slice(prefetched));
  return out;
}

export interface WorkingSetAccuracy {
  /** Working-set pages. */
  predicted: number;
  /** Distinct pages faulted up to the end of the window. */
  faulted: number;
  /** Of those, in the working set. */
  hits: number;
  /** Of those, outside it. */
  misses: number;
  /** Share of the pages needed in the window that the working set held; null without data. */
  recall: number | null;
  /** Share of the working set never asked for during the whole restore; null when unobservable. */
  waste: number | null;
  /**
   * "faults": nothing was prefetched, both figures come from the faults (waste is an upper bound:
   * background loading can deliver a page before the guest touches it).
   * "prefetch-upper-bound": prefetched pages cannot fault, so each is counted as needed (recall is
   * an upper bound) and waste is not observable.
   */
  basis: "faults" | "prefetch-upper-bound";
}

export interface AccuracyOptions {
  prefetched: number;
  /** When the VM started, µs since t0 (undefined: never; every fault counts). */
  startedAtUs: number | undefined;
  /** Faults up to this long after start count as "needed early". */
  windowMs: number;
}

export function workingSetAccuracy(
  workingSet: readonly PageRef[],
  faults: readonly FaultRecord[],
  options: AccuracyOptions,
): WorkingSetAccuracy {
  const predicted = new Set(workingSet.map(key));
  const prefetched = Math.max(0, Math.min(options.prefetched, workingSet.length));
  const windowEnd =
    options.startedAtUs === undefined
      ? Number.POSITIVE_INFINITY
      : options.startedAtUs + options.windowMs * 1000;
  const early = new Set<string>();
  const ever = new Set<string>();
  for (const fault of faults) {
    const id = key(fault);
    ever.add(id);
    if (fault.atUs <= windowEnd) early.add(id);
  }
  let hits = 0;
  for (const id of early) if (predicted.has(id)) hits += 1;
  const misses = early.size - hits;
  const base = { predicted: predicted.size, faulted: early.size, hits, misses };
  if (prefetched === 0) {
    let unused = 0;
    for (const id of predicted) if (!ever.has(id)) unused += 1;
    return {
      ...base,
      recall: early.size === 0 ? null : hits / early.size,
      waste: predicted.size === 0 ? null : unused / predicted.size,
      basis: "faults",
    };
  }
  const needed = prefetched + hits + misses;
  return { ...base, recall: (prefetched + hits) / needed, waste: null, basis: "prefetch-upper-bound" };
}
