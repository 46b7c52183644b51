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
import { PAGE_BYTES, type PageSpace } from "./page-server-space.ts";

/** Pages per checksummed chunk of the snapshot store (layout.ts CHUNK_PAGES). */
export const STORE_CHUNK_PAGES = CHUNK_PAGES;

/** What the page server reads a VM's memory through (VmMemoryReader fits). */
export interface PageSource {
  isPresent(blockId: string, page: number): boolean;
  /** Checks the page's chunk on first touch. */
  readPage(blockId: string, page: number): Promise<Buffer>;
  /** The block's raw image (page N at N*4096); without it every read goes through readPage. */
  rawPath?(blockId: string): string;
}

/** The snapshot parts the page server sends (VmStreamSource fits). */
export interface PageServerSource {
  configuration: Buffer;
  ramStart: RamStart;
  deviceState: Buffer;
  memory: PageSource;
}

export class PageReader {
  readonly #vm: string;
  readonly #memory: PageSource;
  readonly #space: PageSpace;
  /** One byte per store chunk (blocks one after another): the store handed out a page of it. */
  readonly #checked: Uint8Array;
  readonly #firstChunk = new Map<string, number>();
  readonly #fds = new Map<string, number>();
  #closed = false;
  /** An injected fault (util/faults.ts): every read from now on hangs, as on a store gone dead. */
  #hung = false;

  constructor(vm: string, memory: PageSource, space: PageSpace) {
    this.#vm = vm;
    this.#memory = memory;
    this.#space = space;
    let chunks = 0;
    for (const block of space.blocks) {
      this.#firstChunk.set(block.id, chunks);
      chunks += Math.ceil(block.pages / STORE_CHUNK_PAGES);
    }
    this.#checked = new Uint8Array(chunks);
  }

  /** The record now, without I/O through the thread pool; undefined when a checked read is needed. */
  now(index: number): PageRecord | undefined {
    if (this.#hung) return undefined;
    const { blockId, page } = this.#space.refOf(index);
    const offset = page * PAGE_BYTES;
    if (!this.#memory.isPresent(blockId, page)) return { block: blockId, offset, zero: true };
    if (this.#checked[this.#chunk(blockId, page)] !== 1) return undefined;
    const fd = this.#fd(blockId, page);
    if (fd === undefined) return undefined;
    const data = Buffer.allocUnsafe(PAGE_BYTES);
    let read: number;
    try {
      read = readSync(fd, data, 0, PAGE_BYTES, offset);
    } catch (error) {
      throw this.#failure(blockId, page, error);
    }
    if (read !== PAGE_BYTES) throw this.#failure(blockId, page, new Error("short read"));
    return { block: blockId, offset, data };
  }

  /** Every record now, or undefined if any needs a checked read. */
  allNow(indexes: readonly number[]): PageRecord[] | undefined {
    const out: PageRecord[] = [];
    for (const index of indexes) {
      const record = this.now(index);
      if (record === undefined) return undefined;
      out.push(record);
    }
    return out;
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
   * Has the store check chunks ahead of need, one at a time, until `stop()`: first those holding
   * `indexes` (in that order), then (`rest`) every other chunk with data from the top of each
   * block down (the background pump walks up from the bottom: together they cover RAM twice as
   * fast).
   */
  async checkChunks(indexes: readonly number[], stop: () => boolean, rest = true): Promise<void> {
    for (const index of indexes) {
      if (stop()) return;
      const { blockId, page } = this.#space.refOf(index);
      if (this.#checked[this.#chunk(blockId, page)] === 1 || !this.#memory.isPresent(blockId, page)) continue;
      await this.read(index);
    }
    if (!rest) return;
    for (const block of this.#space.blocks) {
      for (
        let first = Math.floor((block.pages - 1) / STORE_CHUNK_PAGES) * STORE_CHUNK_PAGES;
        first >= 0;
        first -= STORE_CHUNK_PAGES
      ) {
        if (stop()) return;
        if (this.#checked[this.#chunk(block.id, first)] === 1) continue;
        const end = Math.min(first + STORE_CHUNK_PAGES, block.pages);
        for (let page = first; page < end; page += 1) {
          if (!this.#memory.isPresent(block.id, page)) continue;
          await this.read(block.base + page);
          break;
        }
      }
    }
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
