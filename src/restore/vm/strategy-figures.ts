import { faultStallTtr } from "../../metrics/ttr.ts";
import type { FaultRecord } from "./page-server-log.ts";

/** Figures both post-copy and kernel paging derive from a fault log (strategy.ts). Pure. */

/** Faults after start per 100 ms bucket of time since the restore command. */
export function faultHistogram(faults: readonly FaultRecord[]): number[] {
  const buckets: number[] = [];
  for (const fault of faults) {
    if (!fault.afterStart) continue;
    const bucket = Math.floor(fault.atUs / 100_000);
    while (buckets.length <= bucket) buckets.push(0);
    buckets[bucket] = (buckets[bucket] ?? 0) + 1;
  }
  return buckets;
}

/** The generic TTR from a fault log (times are µs since the restore command). */
export function stallTtr(faults: readonly FaultRecord[], startedAtUs: number | undefined): number | null {
  if (startedAtUs === undefined) return null;
  const stalls = faults
    .filter((fault) => fault.afterStart && fault.serviceUs !== undefined)
    .map((fault) => ({ fromUs: fault.atUs, toUs: fault.atUs + (fault.serviceUs ?? 0) }));
  return faultStallTtr({ stalls, startedUs: startedAtUs });
}
