import { mkdir, open, type FileHandle } from "node:fs/promises";
import { HrError } from "../../util/errors.ts";
import { Bitmap } from "./bitmap.ts";
import { chunkLength, chunkSum, isZero, rawDigest, zeroChunkSum, ZERO_PAGE } from "./chunk-sum.ts";
import { badInput, writeError } from "./errors.ts";
import { readFully, sha256Hex, writeDurable } from "./fs-io.ts";
import { CHUNK_PAGES, encodeBlockFileName, indexFile, PAGE_SIZE, rawFile, resolveInside } from "./layout.ts";
import { chunkCount, CHUNK_SUM_BYTES, encodeMemoryIndex } from "./memory-index.ts";
import { Staging } from "./staging.ts";

/**
 * Writes one VM's RAM blocks into sparse raw images (`ram/<block>.raw`, page N at N*4096) and,
 * at `finish()`, their indexes (`ram/<block>.idx`, memory-index.ts).
 *
 * Pages arrive in any order and may be rewritten; the last write wins. They are copied into a
 * staging slab (staging.ts) and written when it fills: sorted by address, adjacent pages
 * coalesced into one positional `writev`, a few writes in flight, one fd per block. Flushes run
 * one after another, so a later version of a page always lands after an earlier one. A zero page
 * is never written unless it replaces data already handed to the disk (then zeros are written
 * over it: no hole punching in Node, and a zero-filled block reads the same). A data page that is
 * all zeros counts as a zero page. Chunk checksums are computed at `finish()` by reading the
 * image back (chunks never written are known to be zero and are not read).
 */

export interface BlockSpec {
  /** QEMU's RAM block id, e.g. "pc.ram" or "0000:00:02.0/vga.vram". */
  id: string;
  /** Bytes of the block that are migrated (QEMU's used_length); a multiple of 4096. */
  usedLength: number;
}

export interface FinishedBlock {
  id: string;
  usedLength: number;
  pages: number;
  presentPages: number;
  file: string;
  index: string;
  /** sha256 over the chunk checksum table (the manifest's digest of the raw image). */
  rawDigest: string;
  indexSha256: string;
  indexSize: number;
}

interface BlockState {
  readonly slot: number;
  readonly spec: BlockSpec;
  readonly pages: number;
  readonly file: string;
  readonly index: string;
  readonly handle: FileHandle;
  readonly present: Bitmap;
  /** Pages whose bytes were handed to the file (data, or zeros over data). */
  readonly onDisk: Bitmap;
}

const MAX_BLOCK_PAGES = 2 ** 32 - 1;
const MAX_RUN_PAGES = 256;
const WRITES_IN_FLIGHT = 16;
/** Bytes written between two background fdatasync calls (overlaps disk writeback with writing). */
const SYNC_EVERY_BYTES = 32 * 1024 * 1024;
const DEFAULT_STAGING_PAGES = 2048;

function closed(): HrError {
  return new HrError(
    "SNAPSHOT_CLOSED",
    "this VM's memory image is closed (its snapshot was committed or aborted)",
  );
}

export class MemoryImageWriter {
  readonly #dir: string;
  readonly #label: string;
  readonly #blocks: Map<string, BlockState>;
  readonly #order: BlockState[];
  readonly #stagingPages: number;
  #staging: Staging;
  #spare: Staging[] = [];
  #flushTail: Promise<void> = Promise.resolve();
  #queued: Promise<void>[] = [];
  #failure: Error | undefined;
  #unsynced = 0;
  #syncing: Promise<void> = Promise.resolve();
  #finished = false;

  private constructor(dir: string, label: string, blocks: BlockState[], stagingPages: number) {
    this.#dir = dir;
    this.#label = label;
    this.#order = blocks;
    this.#blocks = new Map(blocks.map((block) => [block.spec.id, block]));
    this.#stagingPages = stagingPages;
    this.#staging = new Staging(stagingPages, blocks.length);
  }

  /** Creates the raw images (sparse, at their full size) under `<dir>/vms/<vm>/ram/`. */
  static async create(
    dir: string,
    label: string,
    vm: string,
    specs: readonly BlockSpec[],
    stagingPages = DEFAULT_STAGING_PAGES,
  ): Promise<MemoryImageWriter> {
    if (!Number.isInteger(stagingPages) || stagingPages < 1) {
      throw badInput("staging needs at least one page");
    }
    const stems = new Set<string>();
    const plan = specs.map((spec) => {
      if (
        !Number.isSafeInteger(spec.usedLength) ||
        spec.usedLength < 0 ||
        spec.usedLength % PAGE_SIZE !== 0
      ) {
        throw badInput(
          `VM ${vm}: block ${spec.id}: used length ${spec.usedLength} is not a multiple of 4096`,
        );
      }
      if (spec.usedLength / PAGE_SIZE > MAX_BLOCK_PAGES) {
        throw badInput(`VM ${vm}: block ${spec.id} too large`);
      }
      const stem = encodeBlockFileName(spec.id, (id) => sha256Hex(id).slice(0, 32));
      if (stems.has(stem)) throw badInput(`VM ${vm}: block ${spec.id} listed twice`);
      stems.add(stem);
      return { spec, file: rawFile(vm, stem), index: indexFile(vm, stem) };
    });
    const blocks: BlockState[] = [];
    try {
      await mkdir(resolveInside(dir, `vms/${vm}/ram`), { recursive: true });
      for (const [slot, { spec, file, index }] of plan.entries()) {
        const handle = await open(resolveInside(dir, file), "wx+", 0o600);
        const pages = spec.usedLength / PAGE_SIZE;
        blocks.push({
          slot,
          spec,
          pages,
          file,
          index,
          handle,
          present: new Bitmap(pages),
          onDisk: new Bitmap(pages),
        });
        await handle.truncate(spec.usedLength);
      }
    } catch (error) {
      await Promise.all(blocks.map((block) => block.handle.close().catch(() => undefined)));
      throw writeError(`${label}/vms/${vm}/ram`, error);
    }
    return new MemoryImageWriter(dir, label, blocks, stagingPages);
  }

  /**
   * Stores the page at `offsetBytes` of block `blockId`; "zero" (or all-zero data) is a zero page.
   * The data is copied before this returns. Await each call: the promise is the backpressure.
   */
  writePage(blockId: string, offsetBytes: number, data: Buffer | "zero"): Promise<void> {
    try {
      if (this.#finished) throw closed();
      if (this.#failure !== undefined) throw this.#failure;
      const block = this.#blocks.get(blockId);
      if (block === undefined) throw badInput(`unknown RAM block ${JSON.stringify(blockId)}`);
      if (!Number.isSafeInteger(offsetBytes) || offsetBytes < 0 || offsetBytes % PAGE_SIZE !== 0) {
        throw badInput(`block ${blockId}: offset ${offsetBytes} is not a page boundary`);
      }
      const page = offsetBytes / PAGE_SIZE;
      if (page >= block.pages) throw badInput(`block ${blockId}: offset ${offsetBytes} past its end`);
      if (data !== "zero" && data.length !== PAGE_SIZE) {
        throw badInput(`block ${blockId}: a page is ${PAGE_SIZE} bytes, got ${data.length}`);
      }
      if (data === "zero" || isZero(data)) this.#stageZero(block, page);
      else this.#stageData(block, page, data);
      if (this.#staging.isFull()) this.#handOver();
      return this.#backpressure();
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  #stageData(block: BlockState, page: number, data: Buffer): void {
    block.present.set(page);
    this.#staging.putData(block.slot, page, data);
  }

  #stageZero(block: BlockState, page: number): void {
    block.present.clear(page);
    if (block.onDisk.get(page)) this.#staging.putZero(block.slot, page);
    else this.#staging.drop(block.slot, page);
  }

  /** Queues the current staging for writing and starts a fresh one (synchronously). */
  #handOver(): void {
    const full = this.#staging;
    if (full.entries === 0) return;
    this.#staging = this.#spare.pop() ?? new Staging(this.#stagingPages, this.#order.length);
    full.forEachData((slot, page) => this.#order[slot]?.onDisk.set(page));
    const done = this.#flushTail.then(async () => {
      try {
        if (this.#failure === undefined) await this.#flush(full);
      } catch (error) {
        this.#failure ??= error instanceof Error ? error : new Error(String(error));
      }
      full.reset();
      if (this.#spare.length < 2) this.#spare.push(full);
      void this.#queued.shift();
    });
    this.#flushTail = done;
    this.#queued.push(done);
  }

  /** Resolves at once while at most one staging waits for the disk; else when the oldest is written. */
  #backpressure(): Promise<void> {
    const oldest = this.#queued[0];
    if (this.#queued.length < 2 || oldest === undefined) return Promise.resolve();
    return oldest.then(() => {
      if (this.#failure !== undefined) throw this.#failure;
    });
  }

  async #flush(staging: Staging): Promise<void> {
    const jobs: (() => Promise<void>)[] = [];
    for (const block of this.#order) {
      const pages = staging.sortedPages(block.slot);
      let start = 0;
      for (let i = 1; i <= pages.length; i++) {
        const previous = pages[i - 1] ?? 0;
        if (i < pages.length && pages[i] === previous + 1 && i - start < MAX_RUN_PAGES) continue;
        const first = pages[start] ?? 0;
        const buffers: Buffer[] = [];
        for (let j = start; j < i; j++) buffers.push(staging.bytesOf(block.slot, pages[j] ?? 0) ?? ZERO_PAGE);
        jobs.push(() => this.#writeRun(block, first * PAGE_SIZE, buffers));
        start = i;
      }
    }
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < jobs.length && this.#failure === undefined) await jobs[next++]?.();
    };
    await Promise.all(Array.from({ length: Math.min(WRITES_IN_FLIGHT, jobs.length) }, worker));
    this.#unsynced += staging.dataPages * PAGE_SIZE;
    if (this.#unsynced >= SYNC_EVERY_BYTES) this.#syncInBackground();
  }

  /**
   * Starts writeback of what was written so far without waiting for it, so the disk works while
   * pages keep arriving and the fsync at `finish()` finds little left to do. One at a time.
   */
  #syncInBackground(): void {
    this.#unsynced = 0;
    this.#syncing = this.#syncing.then(async () => {
      for (const block of this.#order) {
        await block.handle.datasync().catch((error: unknown) => {
          this.#failure ??= writeError(`${this.#label}/${block.file}`, error);
        });
      }
    });
  }

  async #writeRun(block: BlockState, position: number, buffers: Buffer[]): Promise<void> {
    const total = buffers.length * PAGE_SIZE;
    try {
      const { bytesWritten } = await block.handle.writev(buffers, position);
      let done = bytesWritten;
      if (done < total) {
        const rest = Buffer.concat(buffers).subarray(done);
        while (done < total) {
          const { bytesWritten: more } = await block.handle.write(
            rest,
            done - bytesWritten,
            total - done,
            position + done,
          );
          done += more;
        }
      }
    } catch (error) {
      throw writeError(`${this.#label}/${block.file}`, error);
    }
  }

  /** Writes what is staged, computes chunk checksums, writes the indexes, fsyncs and closes. */
  async finish(): Promise<FinishedBlock[]> {
    if (this.#finished) throw closed();
    this.#handOver();
    await this.#flushTail;
    await this.#syncing;
    if (this.#failure !== undefined) throw this.#failure;
    this.#finished = true;
    const finished: FinishedBlock[] = [];
    for (const block of this.#order) finished.push(await this.#finishBlock(block));
    await this.close();
    return finished;
  }

  async #finishBlock(block: BlockState): Promise<FinishedBlock> {
    const label = `${this.#label}/${block.file}`;
    const chunks = chunkCount(block.pages);
    const sums = Buffer.alloc(chunks * CHUNK_SUM_BYTES);
    const buffer = Buffer.allocUnsafe(CHUNK_PAGES * PAGE_SIZE);
    try {
      for (let chunk = 0; chunk < chunks; chunk++) {
        const length = chunkLength(chunk, block.pages);
        const first = chunk * CHUNK_PAGES;
        let sum = zeroChunkSum(length);
        if (block.onDisk.anyInRange(first, first + CHUNK_PAGES)) {
          const read = await readFully(block.handle, buffer, length, first * PAGE_SIZE);
          sum = chunkSum(buffer.subarray(0, read));
        }
        sum.copy(sums, chunk * CHUNK_SUM_BYTES);
      }
      await block.handle.sync();
    } catch (error) {
      throw writeError(label, error);
    }
    const indexBytes = encodeMemoryIndex({ pageCount: block.pages, present: block.present, chunkSums: sums });
    await writeDurable(resolveInside(this.#dir, block.index), `${this.#label}/${block.index}`, indexBytes);
    return {
      id: block.spec.id,
      usedLength: block.spec.usedLength,
      pages: block.pages,
      presentPages: block.present.count(),
      file: block.file,
      index: block.index,
      rawDigest: rawDigest(sums),
      indexSha256: sha256Hex(indexBytes),
      indexSize: indexBytes.length,
    };
  }

  /** Closes every file (after finish, or to abandon the image); waits for writes in flight. */
  async close(): Promise<void> {
    this.#finished = true;
    await this.#flushTail;
    await this.#syncing;
    await Promise.all(this.#order.map((block) => block.handle.close().catch(() => undefined)));
  }
}
