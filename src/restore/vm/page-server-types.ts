/**
 * The page server's options, tuning and reports (page-server.ts has the behaviour).
 */
import type { Socket } from "node:net";
import type { FaultRecord, FaultSummary } from "./page-server-log.ts";
import type { PagePolicy } from "./page-server-policy.ts";
import type { PageServerSource } from "./page-server-read.ts";
import type { PageRef } from "./page-server-space.ts";

export interface PageServerTuning {
  /**
   * Background sections are written only while the socket's user-space queue is below this, so
   * a requested page waits behind at most this much (plus the kernel's socket buffer).
   */
  maxQueuedBytes: number;
  /**
   * Background sections are written only while fewer bytes than this are unacknowledged by the
   * destination (PING/PONG, page-server-window.ts): the bound on what a requested page waits behind.
   */
  inflightBytes: number;
  /** A PING goes into the stream after this many bytes. */
  pingEveryBytes: number;
  /** Pages with data per background section (a zero page is 9 bytes and is not counted). */
  sectionDataPages: number;
  /** Pages of any kind per background section. */
  sectionMaxPages: number;
  /** The background loop yields to the event loop after this much synchronous work (µs). */
  sliceUs: number;
  /** Pages per prefetch section (before LISTEN, written with ordinary backpressure). */
  prefetchSectionPages: number;
  /** After `checkAhead`, check every other chunk too (top down), ahead of the background. */
  checkAll: boolean;
  /** That "every other chunk" waits for the VM's start (markStarted) or the end. */
  checkAllAfterStart: boolean;
  /**
   * Also send the pages the snapshot holds as zero in the background. Off by default: the
   * destination discarded all its RAM at ADVISE and leaves uffd at the end, so a page never sent
   * reads as zero (page-server-space.ts); a zero page the guest touches first is still served.
   */
  sendZeroPages: boolean;
  /** No background page before the destination has loaded the device state (PONG 3). */
  holdUntilPrepared: boolean;
  /** Connected → PONG 3 (device state loaded). */
  preparedTimeoutMs: number;
  /** Nothing read from and nothing drained to the destination for this long: it is stuck. */
  stallTimeoutMs: number;
  /** Connected → SHUT 0. */
  doneTimeoutMs: number;
}

export const DEFAULT_TUNING: Readonly<PageServerTuning> = {
  maxQueuedBytes: 64 * 1024,
  inflightBytes: 128 * 1024,
  pingEveryBytes: 32 * 1024,
  sectionDataPages: 8,
  sectionMaxPages: 256,
  prefetchSectionPages: 256,
  sliceUs: 250,
  checkAll: true,
  checkAllAfterStart: true,
  sendZeroPages: false,
  holdUntilPrepared: true,
  preparedTimeoutMs: 120_000,
  stallTimeoutMs: 30_000,
  doneTimeoutMs: 600_000,
};

export interface PageServerOptions {
  /** VM name, for errors. */
  vm: string;
  /** Connected to the destination's incoming socket. */
  socket: Socket;
  source: PageServerSource;
  /** W0: loaded before LISTEN by the destination's precopy loader, in this order. */
  prefetch?: readonly PageRef[];
  /**
   * Pages whose store chunks to check ahead of time, in this order, one chunk at a time while the
   * rest goes on (typically the working set): a request for a page of a checked chunk is served
   * in the tick it arrives, one of an unchecked chunk waits for a 1 MiB read and its checksum.
   * Nothing is sent for them; it only warms the server.
   */
  checkAhead?: readonly PageRef[];
  /**
   * Pages whose contents the caller already holds, checked (the working set's copies,
   * working-set-file.ts): `data` holds refs[i] at i*4096. They are served from memory, with no
   * chunk read.
   */
  copies?: { refs: readonly PageRef[]; data: Buffer };
  /** Background order (requested pages always go first). */
  policy: PagePolicy;
  /** process.hrtime.bigint() at the restore's start: times in the log are relative to it. */
  t0Ns?: bigint;
  /** Called for every page request as it arrives. */
  onFault?: (record: FaultRecord) => void;
  tuning?: Partial<PageServerTuning>;
}

export interface PrepareReport {
  prefetchPages: number;
  prefetchBytes: number;
  packageBytes: number;
  /** PONG 3 received (device state loaded, RUN next), µs since t0. */
  preparedAtUs: number;
}

export interface PageServerStats {
  pagesTotal: number;
  pagesWritten: number;
  /** Zero pages never sent: the destination's discarded RAM already reads as zero there. */
  pagesLeftZero: number;
  prefetchPages: number;
  /** Pages (and section bytes) handed to the socket before / after markStarted(). */
  pagesBeforeStart: number;
  pagesAfterStart: number;
  bytesBeforeStart: number;
  bytesAfterStart: number;
  sections: number;
  /** µs since t0; undefined until it happened. */
  preparedAtUs: number | undefined;
  startedAtUs: number | undefined;
  allWrittenAtUs: number | undefined;
  doneAtUs: number | undefined;
  faults: FaultSummary;
  /** The background loop's waits: for the PING window, the socket queue, the policy, checked reads. */
  backgroundWaitsMs: { window: number; queue: number; pause: number; read: number };
  /** W0 before start: ms spent reading and checking its pages, and writing them to the destination. */
  prefetchMs: { read: number; write: number };
}

export interface DoneReport {
  stats: PageServerStats;
  /** Distinct pages in first-request order: the refined working set. */
  faultOrder: PageRef[];
  faults: readonly FaultRecord[];
}

export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: Error): void;
  readonly settled: boolean;
}

/** A promise settled from outside; already handled, so awaiting only some of them is safe. */
export function deferred<T>(): Deferred<T> {
  let resolve: (value: T) => void = () => undefined;
  let reject: (error: Error) => void = () => undefined;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined);
  const out = {
    promise,
    settled: false,
    resolve(value: T) {
      out.settled = true;
      resolve(value);
    },
    reject(error: Error) {
      out.settled = true;
      reject(error);
    },
  };
  return out;
}
