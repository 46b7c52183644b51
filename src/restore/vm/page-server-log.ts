/**
 * The page server's fault log: one record per page the destination asked for (a REQ_PAGES of n
 * pages is n records), when the request arrived (µs since the restore's t0), whether the page
 * was already in flight, and its service latency (request received → the page's record handed to
 * the socket). The order of first faults is the VM's refined working set (DESIGN.md §4).
 * Pure: times are given by the caller (process.hrtime.bigint() values).
 */
import { quantile } from "../../metrics/stats.ts";
import type { PageRef, PageSpace } from "./page-server-space.ts";

export interface FaultRecord {
  /** Request received, µs since t0. */
  atUs: number;
  blockId: string;
  page: number;
  /** The page was already picked (written, or being read to be written) when asked for. */
  inFlight: boolean;
  /** The page had already been handed to the socket: nothing to serve. */
  alreadySent: boolean;
  /** Request received → page handed to the socket, µs; undefined while waiting or if alreadySent. */
  serviceUs: number | undefined;
  /** The VM had been started (`cont`) when the request came. */
  afterStart: boolean;
  /**
   * What wrote the page: "now" (its chunk was checked: written in the tick the request came),
   * "read" (its chunk had to be read and checked first), "background" (it was already in a
   * background section being read); undefined while waiting or if alreadySent.
   */
  servedBy: ServedBy | undefined;
}

export type ServedBy = "now" | "read" | "background";

export interface Percentiles {
  p50: number;
  p99: number;
  max: number;
}

export interface FaultSummary {
  /** Page requests (pages, not messages). */
  faults: number;
  /** Distinct pages asked for. */
  distinctPages: number;
  /** Requests for pages already picked when asked for. */
  inFlight: number;
  /** Requests for pages already handed to the socket. */
  alreadySent: number;
  /** Requests whose page was written in answer (their latency is measured). */
  served: number;
  faultsAfterStart: number;
  /** µs, over served requests; NaN when there were none. */
  faultServiceUs: Percentiles;
}

export type RequestState = "unsent" | "claimed" | "written";

export class FaultLog {
  readonly #space: PageSpace;
  readonly #t0Ns: bigint;
  readonly #records: FaultRecord[] = [];
  readonly #waiting = new Map<number, { record: FaultRecord; atNs: bigint }[]>();
  readonly #firstFault: Uint8Array;
  readonly #order: number[] = [];

  constructor(space: PageSpace, t0Ns: bigint) {
    this.#space = space;
    this.#t0Ns = t0Ns;
    this.#firstFault = new Uint8Array(space.total);
  }

  /** A request for page `index`, in the state it was in when the request came. */
  request(index: number, state: RequestState, nowNs: bigint, afterStart: boolean): FaultRecord {
    const ref = this.#space.refOf(index);
    const record: FaultRecord = {
      atUs: usBetween(this.#t0Ns, nowNs),
      blockId: ref.blockId,
      page: ref.page,
      inFlight: state !== "unsent",
      alreadySent: state === "written",
      serviceUs: undefined,
      afterStart,
      servedBy: undefined,
    };
    this.#records.push(record);
    if (this.#firstFault[index] === 0) {
      this.#firstFault[index] = 1;
      this.#order.push(index);
    }
    if (state !== "written") {
      const list = this.#waiting.get(index);
      if (list === undefined) this.#waiting.set(index, [{ record, atNs: nowNs }]);
      else list.push({ record, atNs: nowNs });
    }
    return record;
  }

  /** Page `index` was handed to the socket: every request waiting for it is served. */
  written(index: number, nowNs: bigint, by: ServedBy): void {
    const list = this.#waiting.get(index);
    if (list === undefined) return;
    this.#waiting.delete(index);
    for (const { record, atNs } of list) {
      record.serviceUs = Math.max(0, usBetween(atNs, nowNs));
      record.servedBy = record.inFlight ? "background" : by;
    }
  }

  get size(): number {
    return this.#records.length;
  }

  records(): readonly FaultRecord[] {
    return this.#records;
  }

  /** Pages in the order of their first request (deduplicated): the refined working set. */
  faultOrder(): PageRef[] {
    return this.#order.map((index) => this.#space.refOf(index));
  }

  summary(): FaultSummary {
    return summarizeFaults(this.#records);
  }
}

export function summarizeFaults(records: readonly FaultRecord[]): FaultSummary {
  const latencies: number[] = [];
  const pages = new Set<string>();
  let inFlight = 0;
  let alreadySent = 0;
  let afterStart = 0;
  for (const record of records) {
    pages.add(`${record.blockId}\u0000${record.page}`);
    if (record.inFlight) inFlight += 1;
    if (record.alreadySent) alreadySent += 1;
    if (record.afterStart) afterStart += 1;
    if (record.serviceUs !== undefined) latencies.push(record.serviceUs);
  }
  return {
    faults: records.length,
    distinctPages: pages.size,
    inFlight,
    alreadySent,
    served: latencies.length,
    faultsAfterStart: afterStart,
    faultServiceUs: percentiles(latencies),
  };
}

export function percentiles(values: readonly number[]): Percentiles {
  if (values.length === 0) return { p50: Number.NaN, p99: Number.NaN, max: Number.NaN };
  return {
    p50: round1(quantile(values, 0.5)),
    p99: round1(quantile(values, 0.99)),
    max: round1(values.reduce((most, value) => Math.max(most, value), 0)),
  };
}

export function usBetween(fromNs: bigint, toNs: bigint): number {
  return Number(toNs - fromNs) / 1000;
}

function round1(value: number): number {
  return Math.round(value * 10) / 10;
}
