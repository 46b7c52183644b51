/**
 * Reading pages for the page server. Every byte comes from a chunk the snapshot store checked:
 *
 *   - a page the store holds no data for is a ZERO record, no read at all;
 *   - the first page read from a 1 MiB chunk goes through the store's `readPage`, which reads and
 *     checks the whole chunk (SNAPSHOT_CORRUPT on damage: the page never reaches a guest);
 *   - once a chunk has been handed out by the store it is checked (the store's own contract:
 *     "later reads of it are plain positional reads"), and its pages are read synchronously from
 *     the raw image (`rawPath`) — a 4 KiB pread from the page cache takes microseconds, while a
 *     trip through libuv's thread pool, shared with the background reads, costs hundreds under
 *     load. That is what lets a requested page be written in the same tick its request arrived.
 */
import { closeSync, openSync, readSync } from "node:fs";
import type { PageRecord, RamStart } from "../../migration/index.ts";
import { HrError, isHrError, messageOf } from "../../util/errors.ts";
import { CHUNK_PAGES } from "../../snapshot/store/index.ts";
import { PAGE_BYTES, type PageRef, type PageSpace } from "./page-server-space.ts";

/** Pages per checksummed chunk of the snapshot store (layout.ts CHUNK_PAGES). */
export const STORE_CHUNK_PAGES = CHUNK_PAGES;

/** What the page server reads a VM's memory through (VmMemoryReader fits). */
export interface PageSource {
  isPresent(blockId: string, page: number): boolean;
  /** Checks the page's chunk on first touch. */
  readPage(blockId: string, page: number): Promise<Buffer>;
  /** The block's raw image (page N at N*4096); without it every read goes through readPage. */
  rawPath?(blockId: string): string;
  /** Reads and checks the page's chunk now on this thread (a guest waits for it); no-op if checked. */
  checkChunkSync?(blockId: string, page: number): void;
  /** Checks the chunks of pages [firstPage, firstPage+pages) in one read, ahead of need. */
  checkRange?(blockId: string, firstPage: number, pages: number): Promise<void>;
}

/** Chunks checked per range read ahead of the background (1 MiB), and range reads in flight. */
export const CHECK_RANGE_CHUNKS = 16;
export const CHECK_RANGES_IN_FLIGHT = 2;
/** Working-set chunks (scattered: one small read each) checked at once. */
export const CHECK_SCATTERED_IN_FLIGHT = 8;

/** The snapshot parts the page server sends (VmStreamSource fits). */
export interface PageServerSource {
  configuration: Buffer;
  ramStart: RamStart;
  deviceState: Buffer;
  memory: PageSource;
}

const SLAB_BYTES = 256 * 1024;
/** The longest run `allNow` reads at once (a whole slab). */
const MAX_RUN_PAGES = SLAB_BYTES / PAGE_BYTES;

export class PageReader {
  #slabBuffer = Buffer.allocUnsafeSlow(SLAB_BYTES);
  #slabAt = 0;
  readonly #vm: string;
  readonly #memory: PageSource;
  readonly #space: PageSpace;
  /** One byte per store chunk (blocks one after another): the store handed out a page of it. */
  readonly #checked: Uint8Array;
  readonly #firstChunk = new Map<string, number>();
  readonly #fds = new Map<string, number>();
  /** Pages the caller holds checked copies of (the working set's), by index. */
  readonly #copies = new Map<number, Buffer>();
  #closed = false;
  /** An injected fault (util/faults.ts): every read from now on hangs, as on a store gone dead. */
  #hung = false;

  constructor(
    vm: string,
    memory: PageSource,
    space: PageSpace,
    copies?: { refs: readonly PageRef[]; data: Buffer },
  ) {
    this.#vm = vm;
    this.#memory = memory;
    this.#space = space;
    if (copies !== undefined) {
      if (copies.data.length < copies.refs.length * PAGE_BYTES) {
        throw new HrError("PAGE_SERVER_BAD_INPUT", `VM ${vm}: page copies shorter than their list`);
      }
      space.indexesOf(copies.refs).forEach((index, i) => {
        this.#copies.set(index, copies.data.subarray(i * PAGE_BYTES, (i + 1) * PAGE_BYTES));
      });
    }
    let chunks = 0;
    for (const block of space.blocks) {
      this.#firstChunk.set(block.id, chunks);
      chunks += Math.ceil(block.pages / STORE_CHUNK_PAGES);
    }
    this.#checked = new Uint8Array(chunks);
  }

  /**
   * `bytes` of a shared 256 KiB slab: one allocation per 64 pages instead of one per page (a
   * page buffer lives only until its section is encoded; the GC frees a slab when none of its
   * pages is referenced any more).
   */
  #slab(bytes: number): Buffer {
    if (this.#slabAt + bytes > SLAB_BYTES) {
      this.#slabBuffer = Buffer.allocUnsafeSlow(SLAB_BYTES);
      this.#slabAt = 0;
    }
    const piece = this.#slabBuffer.subarray(this.#slabAt, this.#slabAt + bytes);
    this.#slabAt += bytes;
    return piece;
  }

  /** The record now, without I/O through the thread pool; undefined when a checked read is needed. */
  now(index: number): PageRecord | undefined {
    if (this.#hung) return undefined;
    const { blockId, page } = this.#space.refOf(index);
    const offset = page * PAGE_BYTES;
    if (!this.#memory.isPresent(blockId, page)) return { block: blockId, offset, zero: true };
    const copy = this.#copies.get(index);
    if (copy !== undefined) return { block: blockId, offset, data: copy };
    if (this.#checked[this.#chunk(blockId, page)] !== 1) return undefined;
    const fd = this.#fd(blockId, page);
    if (fd === undefined) return undefined;
    return this.#readRun(fd, blockId, page, 1)[0];
  }

  /**
   * Every record now, or undefined if any needs a checked read. Consecutive pages of a block
   * with data in checked chunks are read with one read (a background batch in address order is
   * mostly such runs; a read per page was the page server's largest cost after the guest's).
   */
  allNow(indexes: readonly number[]): PageRecord[] | undefined {
    const out: PageRecord[] = [];
    let at = 0;
    while (at < indexes.length) {
      const index = indexes[at]!;
      const run = this.#runAt(indexes, at);
      if (run === undefined) {
        const record = this.now(index);
        if (record === undefined) return undefined;
        out.push(record);
        at += 1;
        continue;
      }
      out.push(...this.#readRun(run.fd, run.blockId, run.page, run.pages));
      at += run.pages;
    }
    return out;
  }

  /** Pages [page, page+pages) of a block, checked already, with one read into the slab. */
  #readRun(fd: number, blockId: string, page: number, pages: number): PageRecord[] {
    const data = this.#slab(pages * PAGE_BYTES);
    let read: number;
    try {
      read = readSync(fd, data, 0, data.length, page * PAGE_BYTES);
    } catch (error) {
      throw this.#failure(blockId, page, error);
    }
    if (read !== data.length) throw this.#failure(blockId, page, new Error("short read"));
    const out: PageRecord[] = [];
    for (let i = 0; i < pages; i += 1) {
      const offset = (page + i) * PAGE_BYTES;
      out.push({ block: blockId, offset, data: data.subarray(i * PAGE_BYTES, (i + 1) * PAGE_BYTES) });
    }
    return out;
  }

  /** The run of ≥ 2 readable pages starting at indexes[at] (consecutive, one block, data, checked). */
  #runAt(
    indexes: readonly number[],
    at: number,
  ): { blockId: string; page: number; pages: number; fd: number } | undefined {
    if (this.#hung) return undefined;
    const index = indexes[at]!;
    const block = this.#space.blockOfIndex(index);
    const page = index - block.base;
    const readable = (p: number): boolean =>
      p < block.pages && this.#memory.isPresent(block.id, p) && this.#checked[this.#chunk(block.id, p)] === 1;
    if (!readable(page)) return undefined;
    let pages = 1;
    while (
      pages < MAX_RUN_PAGES &&
      at + pages < indexes.length &&
      indexes[at + pages] === index + pages &&
      readable(page + pages)
    ) {
      pages += 1;
    }
    if (pages < 2) return undefined;
    const fd = this.#fd(block.id, page);
    return fd === undefined ? undefined : { blockId: block.id, page, pages, fd };
  }

  /**
   * Every record now, checking unchecked chunks synchronously when the store can (requested
   * pages: a guest vCPU waits for them); undefined when it cannot.
   */
  allNowChecked(indexes: readonly number[]): PageRecord[] | undefined {
    const check = this.#memory.checkChunkSync?.bind(this.#memory);
    if (check !== undefined && !this.#hung) {
      for (const index of indexes) {
        if (!this.#needsCheck(index)) continue;
        const { blockId, page } = this.#space.refOf(index);
        try {
          check(blockId, page);
        } catch (error) {
          throw this.#failure(blockId, page, error);
        }
        this.#checked[this.#chunk(blockId, page)] = 1;
      }
    }
    return this.allNow(indexes);
  }

  /** The record, through the store's checked read when needed. */
  async read(index: number): Promise<PageRecord> {
    const fast = this.now(index);
    if (fast !== undefined) return fast;
    if (this.#hung) return new Promise<PageRecord>(() => undefined);
    const { blockId, page } = this.#space.refOf(index);
    let data: Buffer;
    try {
      data = await this.#memory.readPage(blockId, page);
    } catch (error) {
      throw this.#failure(blockId, page, error);
    }
    this.#checked[this.#chunk(blockId, page)] = 1;
    return { block: blockId, offset: page * PAGE_BYTES, data };
  }

  /** Records of `indexes` in that order (the checked reads in parallel). */
  async readAll(indexes: readonly number[]): Promise<PageRecord[]> {
    return Promise.all(indexes.map((index) => this.read(index)));
  }

  /**
   * Has the store check chunks ahead of need until `stop()`: first those holding `indexes` (in
   * that order, CHECK_SCATTERED_IN_FLIGHT at a time: scattered reads gain most from overlapping),
   * then (`rest`, once `restAfter` settles) every other chunk with data in address order — the
   * background's order — one 1 MiB range per read, CHECK_RANGES_IN_FLIGHT at a time, so the
   * background rarely waits. Pages with a copy need no check.
   */
  async checkChunks(
    indexes: readonly number[],
    stop: () => boolean,
    rest = true,
    restAfter: Promise<unknown> = Promise.resolve(),
  ): Promise<void> {
    let next = 0;
    const scattered = async (): Promise<void> => {
      while (next < indexes.length && !stop()) {
        const index = indexes[next++]!;
        if (this.#needsCheck(index)) await this.read(index);
      }
    };
    await Promise.all(Array.from({ length: CHECK_SCATTERED_IN_FLIGHT }, scattered));
    if (!rest) return;
    await restAfter;
    const ranges: { blockId: string; base: number; first: number; pages: number }[] = [];
    const span = CHECK_RANGE_CHUNKS * STORE_CHUNK_PAGES;
    for (const block of this.#space.blocks) {
      for (let first = 0; first < block.pages; first += span) {
        ranges.push({
          blockId: block.id,
          base: block.base,
          first,
          pages: Math.min(span, block.pages - first),
        });
      }
    }
    let at = 0;
    const sequential = async (): Promise<void> => {
      while (at < ranges.length && !stop()) {
        const range = ranges[at++]!;
        await this.#checkRange(range.blockId, range.base, range.first, range.pages);
      }
    };
    await Promise.all(Array.from({ length: CHECK_RANGES_IN_FLIGHT }, sequential));
  }

  /** Checks the unchecked chunks with data among pages [first, first+pages) of a block. */
  async #checkRange(blockId: string, base: number, first: number, pages: number): Promise<void> {
    let from = -1;
    let to = -1;
    for (let chunkFirst = first; chunkFirst < first + pages; chunkFirst += STORE_CHUNK_PAGES) {
      if (this.#checked[this.#chunk(blockId, chunkFirst)] === 1) continue;
      const end = Math.min(chunkFirst + STORE_CHUNK_PAGES, first + pages);
      for (let page = chunkFirst; page < end; page += 1) {
        if (!this.#memory.isPresent(blockId, page)) continue;
        if (from < 0) from = chunkFirst;
        to = end;
        break;
      }
    }
    if (from < 0) return;
    if (this.#memory.checkRange === undefined) {
      for (let chunkFirst = from; chunkFirst < to; chunkFirst += STORE_CHUNK_PAGES) {
        if (this.#checked[this.#chunk(blockId, chunkFirst)] !== 1) await this.read(base + chunkFirst);
      }
      return;
    }
    try {
      await this.#memory.checkRange(blockId, from, to - from);
    } catch (error) {
      throw this.#failure(blockId, from, error);
    }
    for (let chunkFirst = from; chunkFirst < to; chunkFirst += STORE_CHUNK_PAGES) {
      this.#checked[this.#chunk(blockId, chunkFirst)] = 1;
    }
  }

  /** The page has data, no copy, and its chunk was not checked yet. */
  #needsCheck(index: number): boolean {
    if (this.#copies.has(index)) return false;
    const { blockId, page } = this.#space.refOf(index);
    return this.#checked[this.#chunk(blockId, page)] !== 1 && this.#memory.isPresent(blockId, page);
  }

  /** Test-only (util/faults.ts): every read from now on never completes. */
  hang(): void {
    this.#hung = true;
  }

  close(): void {
    this.#closed = true;
    for (const fd of this.#fds.values()) {
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
    }
    this.#fds.clear();
  }

  #chunk(blockId: string, page: number): number {
    return (this.#firstChunk.get(blockId) ?? 0) + Math.floor(page / STORE_CHUNK_PAGES);
  }

  #fd(blockId: string, page: number): number | undefined {
    if (this.#closed || this.#memory.rawPath === undefined) return undefined;
    let fd = this.#fds.get(blockId);
    if (fd === undefined) {
      try {
        fd = openSync(this.#memory.rawPath(blockId), "r");
      } catch (error) {
        throw this.#failure(blockId, page, error);
      }
      this.#fds.set(blockId, fd);
    }
    return fd;
  }

  #failure(blockId: string, page: number, error: unknown): HrError {
    const code = isHrError(error) ? error.code : "SNAPSHOT_READ_FAILED";
    return new HrError(
      code,
      `VM ${this.#vm}: page ${page} of RAM block ${blockId} cannot be served: ${messageOf(error)}`,
      {
        cause: error,
        hint: "the restore stopped before the page reached the guest; check the snapshot with `hotrestore snapshot verify`",
      },
    );
  }
}
