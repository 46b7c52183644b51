/**
 * The page server: plays the *source* side of a QEMU 7.2 post-copy migration toward a destination
 * QEMU (started with `-S -incoming defer`, postcopy-ram on, `migrate-incoming unix:...`), over the
 * one socket that also carries the return path. Stream layout: postcopy-stream.ts.
 *
 *   preamble ─► prefetch (W0) ─► discard ─► package ─┬─► pages ─► END, EOF ─► SHUT 0: done
 *                                 PONG 3: prepared ◄─┘
 *
 * After the package two writers share the socket, each writing whole sections:
 *   - requests (REQ_PAGES on the return path): the pages not yet picked are written at once —
 *     in the same tick when their chunk was checked already (page-server-read.ts) — whatever is
 *     queued; the queue is kept short, so they wait behind little;
 *   - background: pages in the policy's order, a small section at a time, only while the
 *     socket's user-space queue holds less than `maxQueuedBytes` and the destination has
 *     acknowledged (PING/PONG, page-server-window.ts) all but `inflightBytes` of the stream —
 *     which bounds what a requested page waits behind, kernel socket buffers included.
 *     Meanwhile the store's chunks are checked ahead of need (the working set's first, the rest
 *     once the VM runs), so most requests find their chunk checked; one that does not is checked
 *     on the spot. Working-set pages the caller holds copies of are served from memory.
 * Every page is claimed once (PageStates) before it is read, so none is written twice (QEMU 7.2
 * fails on a page placed twice), and the background sweeps whatever the policy left, so none is
 * lost. Failures (destination closed, stall, timeout, damaged page, bad return path) destroy the
 * socket and reject `done` (and `prepared` if pending) with an HrError naming the VM; the caller
 * stops QEMU.
 */
import type { Socket } from "node:net";
import {
  encodeRamSection,
  ReturnPathDecoder,
  SinkWriter,
  type PageRecord,
  type ReturnPathMessage,
} from "../../migration/index.ts";
import { HrError, messageOf } from "../../util/errors.ts";
import { blockForever, faultKnob, faultsAt, type FaultPoint } from "../../util/faults.ts";
import { newCursor, nextBackgroundBatch } from "./page-server-batch.ts";
import { namedPageServerError, pageServerError } from "./page-server-errors.ts";
import { publishPageServer } from "./page-server-events.ts";
import { FaultLog, usBetween, type FaultRecord, type ServedBy } from "./page-server-log.ts";
import type { PagePolicy, PolicyView } from "./page-server-policy.ts";
import { PageReader } from "./page-server-read.ts";
import { Watchdog } from "./page-server-watchdog.ts";
import { PingWindow } from "./page-server-window.ts";
import { PAGE_BYTES, PageSpace, PageStates, type PageRef } from "./page-server-space.ts";
import {
  DEFAULT_TUNING,
  deferred,
  type DoneReport,
  type PageServerOptions,
  type PageServerStats,
  type PageServerTuning,
  type PrepareReport,
} from "./page-server-types.ts";
import {
  encodePreamble,
  encodeRunPackage,
  encodeStreamEnd,
  PING_PACKAGE,
  planDiscards,
} from "./postcopy-stream.ts";

export type * from "./page-server-types.ts";
export { DEFAULT_TUNING } from "./page-server-types.ts";

const ignore = (): void => undefined;

export class PageServer {
  readonly #options: PageServerOptions;
  readonly #tuning: PageServerTuning;
  readonly #vm: string;
  readonly #socket: Socket;
  readonly #sectionId: number;
  readonly #space: PageSpace;
  readonly #states: PageStates;
  readonly #reader: PageReader;
  readonly #log: FaultLog;
  readonly #policy: PagePolicy;
  readonly #view: PolicyView;
  readonly #decoder = new ReturnPathDecoder();
  readonly #t0Ns: bigint;
  readonly #prepared = deferred<PrepareReport>();
  readonly #done = deferred<DoneReport>();
  /** Requested pages being read from the store, with when their read began. */
  readonly #serving = new Map<Promise<void>, number>();
  readonly #cursor = newCursor();
  readonly #window: PingWindow;
  readonly #wakers: (() => void)[] = [];
  #prepare: Omit<PrepareReport, "preparedAtUs"> | undefined;
  #eofWritten = false;
  #finished = false;
  #started = false;
  /** Resolved by markStarted. */
  readonly #startedGate = deferred<void>();
  /** An injected stall (util/faults.ts): nothing is read or written any more. */
  #stalled = false;
  #watchdog: Watchdog | undefined;
  readonly #counts = { prefetch: 0, before: 0, after: 0, bytesBefore: 0, bytesAfter: 0, sections: 0 };
  /** Where the background loop's time went (ns): waiting for the window, the queue, the policy, reads. */
  readonly #waits = { window: 0n, queue: 0n, pause: 0n, read: 0n };
  /** W0 before start: time reading (and checking) its pages, and writing them (the destination's pace). */
  readonly #prefetchMs = { read: 0, write: 0 };
  readonly #times: { prepared?: bigint; started?: bigint; allWritten?: bigint; done?: bigint } = {};

  private constructor(options: PageServerOptions) {
    this.#options = options;
    const tuning = { ...DEFAULT_TUNING, ...options.tuning };
    this.#tuning = { ...tuning, stallTimeoutMs: faultKnob("stall-timeout-ms") ?? tuning.stallTimeoutMs };
    this.#vm = options.vm;
    this.#socket = options.socket;
    this.#sectionId = options.source.ramStart.sectionId;
    this.#space = new PageSpace(options.source.ramStart.blocks);
    this.#states = new PageStates(this.#space.total);
    if (!this.#tuning.sendZeroPages) {
      this.#states.leaveAbsent(this.#space, (blockId, page) =>
        options.source.memory.isPresent(blockId, page),
      );
    }
    this.#reader = new PageReader(options.vm, options.source.memory, this.#space, options.copies);
    this.#t0Ns = options.t0Ns ?? process.hrtime.bigint();
    this.#log = new FaultLog(this.#space, this.#t0Ns);
    this.#policy = options.policy;
    this.#window = new PingWindow(this.#tuning.inflightBytes, this.#tuning.pingEveryBytes);
    const states = this.#states;
    const started = (): boolean => this.#started;
    this.#view = {
      space: this.#space,
      isUnsent: (index) => states.isUnsent(index),
      get started() {
        return started();
      },
    };
  }

  /** Starts speaking on `options.socket` at once. */
  static start(options: PageServerOptions): PageServer {
    const server = new PageServer(options);
    server.#begin();
    return server;
  }

  /** Device state loaded at the destination (PONG 3), W0 loaded, RUN sent; the VM is still paused. */
  get prepared(): Promise<PrepareReport> {
    return this.#prepared.promise;
  }

  /** Every page written, END and EOF sent, and the destination answered SHUT 0. */
  get done(): Promise<DoneReport> {
    return this.#done.promise;
  }

  get space(): PageSpace {
    return this.#space;
  }

  /** The caller started the VM (`cont` returned): later pages count as "after start". */
  markStarted(): void {
    if (this.#started) return;
    this.#started = true;
    this.#startedGate.resolve();
    this.#times.started = process.hrtime.bigint();
    this.#policy.onStart(this.#view);
    this.#inject("running");
  }

  /** Stops serving: the socket is destroyed and `done` rejects with PAGE_SERVER_ABORTED. */
  abort(why = "aborted by the caller"): void {
    this.#fail(pageServerError("PAGE_SERVER_ABORTED", this.#vm, why));
  }

  faults(): readonly FaultRecord[] {
    return this.#log.records();
  }

  faultOrder(): PageRef[] {
    return this.#log.faultOrder();
  }

  stats(): PageServerStats {
    const at = (ns: bigint | undefined): number | undefined =>
      ns === undefined ? undefined : Math.round(usBetween(this.#t0Ns, ns));
    const counts = this.#counts;
    return {
      pagesTotal: this.#space.total,
      pagesWritten: this.#states.written,
      pagesLeftZero: this.#states.left,
      prefetchPages: counts.prefetch,
      pagesBeforeStart: counts.before,
      pagesAfterStart: counts.after,
      bytesBeforeStart: counts.bytesBefore,
      bytesAfterStart: counts.bytesAfter,
      sections: counts.sections,
      preparedAtUs: at(this.#times.prepared),
      startedAtUs: at(this.#times.started),
      allWrittenAtUs: at(this.#times.allWritten),
      doneAtUs: at(this.#times.done),
      faults: this.#log.summary(),
      backgroundWaitsMs: {
        window: Number(this.#waits.window / 1_000_000n),
        queue: Number(this.#waits.queue / 1_000_000n),
        pause: Number(this.#waits.pause / 1_000_000n),
        read: Number(this.#waits.read / 1_000_000n),
      },
      prefetchMs: { read: Math.round(this.#prefetchMs.read), write: Math.round(this.#prefetchMs.write) },
    };
  }

  #begin(): void {
    const socket = this.#socket;
    const closed = (what: string, cause?: unknown): void =>
      this.#fail(pageServerError("PAGE_SERVER_CLOSED", this.#vm, what, { cause }));
    socket.on("data", (chunk: Buffer) => this.#onData(chunk));
    socket.on("drain", () => {
      if (this.#stalled) return;
      this.#activity();
      this.#wake();
    });
    socket.on("error", (error) => closed(`socket error: ${error.message}`, error));
    socket.on("close", () => closed("the destination closed the connection"));
    this.#watchdog = new Watchdog(
      this.#vm,
      this.#tuning,
      () => this.#prepared.settled,
      (error) => this.#fail(error),
      () => this.#oldestServing(),
    );
    publishPageServer({ vm: this.#vm, state: "serving" });
    this.#run().catch((error: unknown) => this.#fail(error));
  }

  async #run(): Promise<void> {
    const source = this.#options.source;
    const writer = new SinkWriter(this.#socket);
    await writer.write(encodePreamble(source));
    this.#checkAhead().catch((error: unknown) => this.#fail(error));
    const plan = planDiscards(this.#space, this.#prefetchIndexes());
    const prefetchBytes = await this.#writePrefetch(writer, plan.prefetch);
    this.#inject("prefetch");
    while (this.#stalled && !this.#finished) await this.#progress(false);
    if (this.#finished) return;
    for (const discard of plan.discards) await writer.write(discard);
    const pkg = encodeRunPackage(source.deviceState);
    this.#prepare = { prefetchPages: this.#counts.prefetch, prefetchBytes, packageBytes: pkg.length };
    await writer.write(pkg);
    // No background page until the device state is loaded (PONG 3): pages placed meanwhile take
    // CPU from the load, which is on the restore's critical path (measured: +100-150 ms latency
    // on the 512 MiB VM). Requested pages are served meanwhile as always.
    if (this.#tuning.holdUntilPrepared) await this.#prepared.promise.catch(() => undefined);
    await this.#pumpBackground();
    while (this.#serving.size > 0) await Promise.all([...this.#serving.keys()]);
    if (this.#finished) return;
    if (!this.#states.settled) {
      const missing = this.#space.total - this.#states.written - this.#states.left;
      throw pageServerError("PAGE_SERVER_INTERNAL", this.#vm, `${missing} pages were never written`);
    }
    this.#times.allWritten = process.hrtime.bigint();
    this.#eofWritten = true;
    this.#write(encodeStreamEnd(this.#sectionId));
  }

  #prefetchIndexes(): number[] {
    try {
      return this.#space.indexesOf(this.#options.prefetch ?? []);
    } catch (error) {
      throw pageServerError("PAGE_SERVER_BAD_INPUT", this.#vm, `prefetch list: ${messageOf(error)}`, {
        cause: error,
      });
    }
  }

  async #writePrefetch(writer: SinkWriter, indexes: readonly number[]): Promise<number> {
    let bytes = 0;
    const step = this.#tuning.prefetchSectionPages;
    for (let at = 0; at < indexes.length && !this.#finished; at += step) {
      const batch = indexes.slice(at, at + step).filter((index) => this.#states.claim(index));
      if (batch.length === 0) continue;
      const t0 = performance.now();
      const section = this.#section(await this.#reader.readAll(batch));
      const t1 = performance.now();
      this.#markWritten(batch, section.length, "background");
      this.#counts.prefetch += batch.length;
      bytes += section.length;
      await writer.write(section);
      this.#prefetchMs.read += t1 - t0;
      this.#prefetchMs.write += performance.now() - t1;
      this.#activity();
    }
    return bytes;
  }

  /**
   * Background sections while the queue is short. Reads of checked chunks are synchronous, so
   * the loop yields to the event loop every `sliceUs` to let page requests in.
   */
  async #pumpBackground(): Promise<void> {
    const socket = this.#socket;
    const t = this.#tuning;
    const memory = this.#options.source.memory;
    const window = this.#window;
    const sliceNs = BigInt(Math.round(t.sliceUs * 1000));
    let sliceStart = process.hrtime.bigint();
    while (!this.#finished) {
      if (this.#stalled) {
        await this.#progress(false);
        continue;
      }
      const queueFull = socket.writableLength >= t.maxQueuedBytes;
      if (queueFull || !window.open) {
        const ping = window.pingDue(true);
        if (ping !== undefined) this.#write(ping, false);
        const waitStart = process.hrtime.bigint();
        await this.#progress(queueFull);
        sliceStart = process.hrtime.bigint();
        if (queueFull) this.#waits.queue += sliceStart - waitStart;
        else this.#waits.window += sliceStart - waitStart;
        continue;
      }
      const batch = nextBackgroundBatch(this.#cursor, this.#policy, this.#view, this.#states, memory, t);
      if (!Array.isArray(batch)) {
        const waitStart = process.hrtime.bigint();
        await this.#pause(batch.pauseMs);
        sliceStart = process.hrtime.bigint();
        this.#waits.pause += sliceStart - waitStart;
        continue;
      }
      if (batch.length === 0) return;
      const now = this.#reader.allNow(batch);
      const readStart = process.hrtime.bigint();
      const records = now ?? (await this.#reader.readAll(batch));
      if (now === undefined) this.#waits.read += process.hrtime.bigint() - readStart;
      if (this.#finished) return;
      this.#writePages(batch, records, "background");
      const ping = window.pingDue(false);
      if (ping !== undefined) this.#write(ping, false);
      if (now === undefined) {
        sliceStart = process.hrtime.bigint();
      } else if (process.hrtime.bigint() - sliceStart > sliceNs) {
        await new Promise((resolve) => setImmediate(resolve));
        sliceStart = process.hrtime.bigint();
      }
    }
  }

  /**
   * Has the store check chunks ahead of need — those of `checkAhead` first, then the rest from
   * the top down — so that requests for their pages are served in the tick they arrive.
   */
  async #checkAhead(): Promise<void> {
    const refs = this.#options.checkAhead ?? [];
    const indexes = refs.flatMap((ref) => {
      const index = this.#space.tryIndex(ref.blockId, ref.page);
      return index === undefined ? [] : [index];
    });
    // The rest waits for the VM's start (or the end): before it, it takes the CPU that the
    // restores still loading need (cluster bench, 4 VMs on 2 cores: every VM running after
    // 0.8-1.0 s instead of 1.9-2.4 s; absolute flow resumption unchanged).
    const after = this.#tuning.checkAllAfterStart
      ? Promise.race([this.#startedGate.promise, this.#done.promise.then(ignore, ignore)])
      : Promise.resolve();
    await this.#reader.checkChunks(indexes, () => this.#finished, this.#tuning.checkAll, after);
  }

  /**
   * Resolves on the next sign of progress: a drain, a PONG, the end. A user-space queue below
   * the stream's high-water mark emits no drain: then it is polled every millisecond.
   */
  #progress(queueFull: boolean): Promise<void> {
    return new Promise((resolve) => {
      if (this.#finished) {
        resolve();
        return;
      }
      this.#wakers.push(resolve);
      if (queueFull && !this.#socket.writableNeedDrain) setTimeout(() => this.#wake(), 1);
    });
  }

  /** The policy holds the background back: until `ms` passed or a page was requested. */
  #pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.#wake(), Math.max(0, ms));
      this.#wakers.push(() => {
        clearTimeout(timer);
        resolve();
      });
      if (this.#finished) this.#wake();
    });
  }

  #wake(): void {
    for (const wake of this.#wakers.splice(0)) wake();
  }

  #onData(chunk: Buffer): void {
    if (this.#stalled) return;
    this.#activity();
    let messages: ReturnPathMessage[];
    try {
      messages = this.#decoder.push(chunk);
    } catch (error) {
      const what = `bad return path: ${messageOf(error)}`;
      this.#fail(pageServerError("PAGE_SERVER_PROTOCOL", this.#vm, what, { cause: error }));
      return;
    }
    for (const message of messages) {
      if (this.#finished) return;
      try {
        this.#onMessage(message);
      } catch (error) {
        this.#fail(error);
      }
    }
  }

  #onMessage(message: ReturnPathMessage): void {
    const protocol = (what: string): HrError => pageServerError("PAGE_SERVER_PROTOCOL", this.#vm, what);
    switch (message.type) {
      case "pong":
        if (this.#window.acked(message.value)) this.#wake();
        if (message.value === PING_PACKAGE && this.#prepare !== undefined && !this.#prepared.settled) {
          this.#times.prepared = process.hrtime.bigint();
          const preparedAtUs = Math.round(usBetween(this.#t0Ns, this.#times.prepared));
          this.#prepared.resolve({ ...this.#prepare, preparedAtUs });
        }
        return;
      case "reqPages":
        this.#onRequest(message.block, message.start, message.length);
        return;
      case "shut":
        if (message.error !== 0) {
          const what = `the destination failed (SHUT ${message.error})`;
          this.#fail(pageServerError("PAGE_SERVER_DEST_FAILED", this.#vm, what));
        } else if (!this.#eofWritten) {
          this.#fail(protocol("the destination ended before the stream did"));
        } else {
          this.#finish();
        }
        return;
      case "resumeAck":
        this.#fail(protocol("unexpected RESUME_ACK (postcopy recovery is not used)"));
        return;
    }
  }

  #onRequest(blockId: string, start: number, length: number): void {
    const now = process.hrtime.bigint();
    const block = this.#space.block(blockId);
    const first = Math.floor(start / PAGE_BYTES);
    const end = Math.ceil((start + length) / PAGE_BYTES);
    if (block === undefined || length <= 0 || end > block.pages) {
      const what = `request for ${length} bytes at ${start} of block ${blockId}: no such pages`;
      throw pageServerError("PAGE_SERVER_PROTOCOL", this.#vm, what);
    }
    const claimed: number[] = [];
    for (let page = first; page < end; page += 1) {
      const index = block.base + page;
      const states = this.#states;
      const state = states.isPending(index) ? "unsent" : states.isWritten(index) ? "written" : "claimed";
      const record = this.#log.request(index, state, now, this.#started);
      const fault = { index, inFlight: state !== "unsent", atUs: record.atUs, afterStart: this.#started };
      this.#policy.onFault(fault, this.#view);
      this.#options.onFault?.(record);
      // After EOF the destination reads no more pages: a LEFT page asked for now is zeroed by its
      // uffd cleanup (see page-server-space.ts).
      if (!this.#eofWritten && states.claimRequested(index)) claimed.push(index);
    }
    this.#wake(); // a pausing policy gets asked again
    if (claimed.length === 0) return;
    const records = this.#reader.allNowChecked(claimed);
    if (records !== undefined) {
      this.#writePages(claimed, records, "now");
      return;
    }
    const serving = this.#reader.readAll(claimed).then((read) => {
      if (!this.#finished) this.#writePages(claimed, read, "read");
    });
    this.#serving.set(serving, performance.now());
    serving
      .catch((error: unknown) => this.#fail(error))
      .finally(() => this.#serving.delete(serving))
      .catch(() => undefined);
  }

  #section(records: readonly PageRecord[]): Buffer {
    return encodeRamSection("part", this.#sectionId, records);
  }

  #writePages(indexes: readonly number[], records: readonly PageRecord[], by: ServedBy): void {
    const section = this.#section(records);
    this.#write(section);
    this.#markWritten(indexes, section.length, by);
  }

  /** `counted`: not yet in the window's byte count (everything but its own PINGs). */
  #write(bytes: Buffer, counted = true): void {
    if (this.#socket.destroyed) {
      throw pageServerError("PAGE_SERVER_CLOSED", this.#vm, "the destination closed the connection");
    }
    if (this.#stalled) return;
    this.#socket.write(bytes);
    if (counted) this.#window.written(bytes.length);
    this.#activity();
  }

  #markWritten(indexes: readonly number[], bytes: number, by: ServedBy): void {
    const now = process.hrtime.bigint();
    for (const index of indexes) {
      this.#states.markWritten(index);
      this.#log.written(index, now, by);
    }
    const counts = this.#counts;
    counts.sections += 1;
    if (this.#started) {
      counts.after += indexes.length;
      counts.bytesAfter += bytes;
    } else {
      counts.before += indexes.length;
      counts.bytesBefore += bytes;
    }
  }

  #activity(): void {
    this.#watchdog?.activity();
  }

  /** performance.now() when the oldest requested page still being read was requested. */
  #oldestServing(): number | undefined {
    let oldest: number | undefined;
    for (const since of this.#serving.values()) oldest = Math.min(oldest ?? since, since);
    return oldest;
  }

  /** Test-only faults (util/faults.ts); nothing happens unless HOTRESTORE_FAULT names this VM. */
  #inject(point: FaultPoint): void {
    if (this.#finished) return;
    for (const fault of faultsAt(this.#vm, point)) {
      publishPageServer({ vm: this.#vm, state: "fault", fault, point });
      switch (fault) {
        case "page-server-stall":
          this.#stalled = true;
          this.#socket.pause();
          break;
        case "store-read-hang":
          this.#reader.hang();
          break;
        case "event-loop-block":
          blockForever();
      }
    }
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#times.done = process.hrtime.bigint();
    this.#cleanup();
    this.#socket.end();
    if (!this.#prepared.settled) {
      this.#prepared.reject(pageServerError("PAGE_SERVER_PROTOCOL", this.#vm, "finished without PONG 3"));
    }
    const report = { stats: this.stats(), faultOrder: this.#log.faultOrder(), faults: this.#log.records() };
    this.#done.resolve(report);
  }

  #fail(error: unknown): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#cleanup();
    this.#socket.destroy();
    const failure = namedPageServerError(this.#vm, error);
    if (!this.#prepared.settled) this.#prepared.reject(failure);
    this.#done.reject(failure);
  }

  #cleanup(): void {
    publishPageServer({ vm: this.#vm, state: "ended" });
    this.#wake();
    this.#watchdog?.stop();
    this.#reader.close();
  }
}
