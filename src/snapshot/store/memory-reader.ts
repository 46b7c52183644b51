import { closeSync, openSync } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { Bitmap } from "./bitmap.ts";
import { rawDigest } from "./chunk-sum.ts";
import { badInput, corrupt, readError } from "./errors.ts";
import { readFully } from "./fs-io.ts";
import { CHUNK_PAGES, PAGE_SIZE, resolveInside } from "./layout.ts";
import type { ManifestBlock, ManifestFile, ManifestVm } from "./manifest.ts";
import { chunkCount, decodeMemoryIndex } from "./memory-index.ts";
import {
  RANGE_CHUNKS,
  readCheckedChunk,
  readCheckedChunkSync,
  readCheckedRange,
  scanRawImage,
} from "./raw-image.ts";

/**
 * Reads one VM's memory from a committed snapshot. Opening loads and checks every block's
 * index (its sha256 against the manifest, its structure, its chunk table against the raw
 * image's digest). Every byte handed out comes from a chunk that was checked: the first read
 * that touches a chunk reads and checks the whole chunk (1 MiB), later reads of it are plain
 * positional reads. A damaged chunk throws SNAPSHOT_CORRUPT naming the file and chunk, every time.
 */

export interface StoredPage {
  page: number;
  data: Buffer;
}

interface BlockReader {
  readonly meta: ManifestBlock;
  readonly path: string;
  readonly label: string;
  readonly present: Bitmap;
  readonly sums: Buffer;
  readonly verified: Bitmap;
  readonly checking: Map<number, Promise<Buffer>>;
  handle: Promise<FileHandle> | undefined;
  /** For checkChunkSync; closed by close(). */
  fd: number | undefined;
}

/** Pages read at once by copyPages. */
const COPY_READS_IN_FLIGHT = 8;

export type IndexLoader = (path: string) => Promise<Buffer>;

export class VmMemoryReader {
  readonly vm: string;
  readonly #blocks: Map<string, BlockReader>;

  private constructor(vm: string, blocks: BlockReader[]) {
    this.vm = vm;
    this.#blocks = new Map(blocks.map((block) => [block.meta.id, block]));
  }

  /** `loadVerified` reads a file listed in the manifest and checks its size and sha256. */
  static async open(
    dir: string,
    labelOf: (path: string) => string,
    vm: ManifestVm,
    files: ReadonlyMap<string, ManifestFile>,
    loadVerified: IndexLoader,
  ): Promise<VmMemoryReader> {
    const blocks: BlockReader[] = [];
    for (const meta of vm.blocks) {
      const index = decodeMemoryIndex(labelOf(meta.index), await loadVerified(meta.index));
      const label = labelOf(meta.file);
      if (index.pageCount !== meta.pages || index.present.count() !== meta.presentPages) {
        throw corrupt(labelOf(meta.index), "page counts differ from the manifest");
      }
      if (files.get(meta.file)?.sha256 !== rawDigest(index.chunkSums)) {
        throw corrupt(label, "its index's chunk table does not match the manifest");
      }
      blocks.push({
        meta,
        path: resolveInside(dir, meta.file),
        label,
        present: index.present,
        sums: index.chunkSums,
        verified: new Bitmap(chunkCount(meta.pages)),
        checking: new Map(),
        handle: undefined,
        fd: undefined,
      });
    }
    return new VmMemoryReader(vm.name, blocks);
  }

  blockIds(): string[] {
    return [...this.#blocks.keys()];
  }

  #block(blockId: string): BlockReader {
    const block = this.#blocks.get(blockId);
    if (block === undefined) throw badInput(`VM ${this.vm} has no RAM block ${JSON.stringify(blockId)}`);
    return block;
  }

  #page(block: BlockReader, page: number): number {
    if (!Number.isInteger(page) || page < 0 || page >= block.meta.pages) {
      throw badInput(
        `VM ${this.vm}: page ${page} outside block ${block.meta.id} (${block.meta.pages} pages)`,
      );
    }
    return page;
  }

  pageCount(blockId: string): number {
    return this.#block(blockId).meta.pages;
  }

  isPresent(blockId: string, page: number): boolean {
    const block = this.#block(blockId);
    return block.present.get(this.#page(block, page));
  }

  /** The raw image (page N at N*4096, holes read as zeros), e.g. for memory-backend-file. Call
   * `verify()` first: the kernel will read it without our checks. */
  rawPath(blockId: string): string {
    return this.#block(blockId).path;
  }

  /**
   * What a reader outside this class needs to check a block's raw image itself (the FUSE worker,
   * which serves the image to the kernel from its own thread): the file, its label for errors,
   * the page count, the chunk checksums and which pages are stored.
   */
  chunkTable(blockId: string): {
    path: string;
    label: string;
    pages: number;
    sums: Buffer;
    isPresent: (page: number) => boolean;
  } {
    const block = this.#block(blockId);
    return {
      path: block.path,
      label: block.label,
      pages: block.meta.pages,
      sums: block.sums,
      isPresent: (page) => block.present.get(page),
    };
  }

  #handle(block: BlockReader): Promise<FileHandle> {
    block.handle ??= open(block.path, "r").catch((error: unknown) => {
      block.handle = undefined;
      throw readError(block.label, error);
    });
    return block.handle;
  }

  /**
   * Reads and checks the chunk holding `page` now, on the calling thread, unless it was checked
   * already: for a page a guest waits for (readCheckedChunkSync says why). SNAPSHOT_CORRUPT on damage.
   */
  checkChunkSync(blockId: string, page: number): void {
    const block = this.#block(blockId);
    const chunk = Math.floor(this.#page(block, page) / CHUNK_PAGES);
    if (block.verified.get(chunk)) return;
    if (block.fd === undefined) {
      try {
        block.fd = openSync(block.path, "r");
      } catch (error) {
        throw readError(block.label, error);
      }
    }
    readCheckedChunkSync(block.fd, block.label, block.meta.pages, block.sums, chunk);
    block.verified.set(chunk);
  }

  /** Reads and checks a chunk; concurrent first readers share one read. */
  async #checkedChunk(block: BlockReader, chunk: number): Promise<Buffer> {
    let pending = block.checking.get(chunk);
    if (pending === undefined) {
      pending = this.#handle(block).then((handle) =>
        readCheckedChunk(handle, block.label, block.meta.pages, block.sums, chunk),
      );
      block.checking.set(chunk, pending);
    }
    try {
      const bytes = await pending;
      block.verified.set(chunk);
      return bytes;
    } finally {
      block.checking.delete(chunk);
    }
  }

  /**
   * Checks the chunks holding pages [firstPage, firstPage+pages) in one read (chunks checked
   * already or being checked are trimmed off both ends); readers of those chunks meanwhile share
   * it. Ahead-of-need checking for the page server: one 1 MiB read instead of 16 small ones.
   */
  async checkRange(blockId: string, firstPage: number, pages: number): Promise<void> {
    const block = this.#block(blockId);
    let first = Math.floor(this.#page(block, firstPage) / CHUNK_PAGES);
    let end = Math.min(chunkCount(block.meta.pages), Math.ceil((firstPage + pages) / CHUNK_PAGES));
    const done = (chunk: number): boolean => block.verified.get(chunk) || block.checking.has(chunk);
    while (first < end && done(first)) first++;
    while (end > first && done(end - 1)) end--;
    if (first >= end) return;
    const reading = this.#handle(block).then((handle) =>
      readCheckedRange(handle, block.label, block.meta.pages, block.sums, first, end - first),
    );
    const chunkBytes = CHUNK_PAGES * PAGE_SIZE;
    const ours = new Map<number, Promise<Buffer>>();
    for (let chunk = first; chunk < end; chunk++) {
      if (done(chunk)) continue;
      const at = (chunk - first) * chunkBytes;
      const slice = reading.then((bytes) => bytes.subarray(at, at + chunkBytes));
      slice.catch(() => undefined); // awaited by whoever reads the chunk meanwhile, if anyone
      block.checking.set(chunk, slice);
      ours.set(chunk, slice);
    }
    try {
      await reading;
      for (const chunk of ours.keys()) block.verified.set(chunk);
    } finally {
      for (const [chunk, slice] of ours)
        if (block.checking.get(chunk) === slice) block.checking.delete(chunk);
    }
  }

  /** Chunks of a block already checked (the page server skips re-reading them). */
  isChecked(blockId: string, page: number): boolean {
    const block = this.#block(blockId);
    return block.verified.get(Math.floor(this.#page(block, page) / CHUNK_PAGES));
  }

  /** One page (4096 bytes; zeros for a page that was never stored). */
  async readPage(blockId: string, page: number): Promise<Buffer> {
    const block = this.#block(blockId);
    const chunk = Math.floor(this.#page(block, page) / CHUNK_PAGES);
    const offset = (page % CHUNK_PAGES) * PAGE_SIZE;
    if (!block.verified.get(chunk)) {
      const bytes = await this.#checkedChunk(block, chunk);
      return Buffer.from(bytes.subarray(offset, offset + PAGE_SIZE));
    }
    const out = Buffer.alloc(PAGE_SIZE);
    if (!block.present.get(page)) return out;
    try {
      const read = await readFully(await this.#handle(block), out, PAGE_SIZE, page * PAGE_SIZE);
      if (read !== PAGE_SIZE) throw corrupt(block.label, `page ${page} truncated`);
    } catch (error) {
      throw readError(block.label, error);
    }
    return out;
  }

  /**
   * The pages of `refs`, checked, one after another in one buffer (refs[i] at i*4096): the
   * working set's copies (working-set-file.ts). Scattered chunk reads overlap, COPY_READS_IN_FLIGHT.
   */
  async copyPages(refs: readonly { blockId: string; page: number }[]): Promise<Buffer> {
    const out = Buffer.alloc(refs.length * PAGE_SIZE);
    let next = 0;
    const copyNext = async (): Promise<void> => {
      while (next < refs.length) {
        const at = next++;
        const ref = refs[at]!;
        (await this.readPage(ref.blockId, ref.page)).copy(out, at * PAGE_SIZE);
      }
    };
    await Promise.all(Array.from({ length: COPY_READS_IN_FLIGHT }, copyNext));
    return out;
  }

  /** Every stored (non-zero) page of a block in address order, each chunk checked; reads one ahead. */
  async *pages(blockId: string): AsyncGenerator<StoredPage> {
    for await (const chunk of this.chunkPages(blockId)) yield* chunk;
  }

  /**
   * As `pages`, a checked chunk's stored pages at a time (one await per chunk, not per page).
   * Reads RANGE_CHUNKS chunks (1 MiB) per read, starting at the next chunk with data, one range
   * ahead: on a cold page cache, 64 KiB reads one at a time made a full restore wait on the disk
   * for each (raw-image.ts has the measurement).
   */
  async *chunkPages(blockId: string): AsyncGenerator<StoredPage[]> {
    const block = this.#block(blockId);
    const chunks = chunkCount(block.meta.pages);
    const nextWithData = (from: number): number => {
      for (let chunk = from; chunk < chunks; chunk++) {
        if (block.present.anyInRange(chunk * CHUNK_PAGES, (chunk + 1) * CHUNK_PAGES)) return chunk;
      }
      return -1;
    };
    // The read ahead is settled into a value at once, so a failure while the consumer holds the
    // generator is never an unhandled rejection; it is thrown when that range's turn comes.
    const readAhead = (first: number): Promise<Buffer | Error> | undefined => {
      if (first < 0) return undefined;
      const count = Math.min(RANGE_CHUNKS, chunks - first);
      return this.#handle(block)
        .then((handle) => readCheckedRange(handle, block.label, block.meta.pages, block.sums, first, count))
        .then(
          (bytes) => {
            for (let chunk = first; chunk < first + count; chunk++) block.verified.set(chunk);
            return bytes;
          },
          (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
        );
    };
    let first = nextWithData(0);
    let pending = readAhead(first);
    while (pending !== undefined) {
      const bytes = await pending;
      if (bytes instanceof Error) throw bytes;
      const current = first;
      const end = Math.min(current + RANGE_CHUNKS, chunks);
      first = nextWithData(end);
      pending = readAhead(first);
      for (let chunk = current; chunk < end; chunk++) {
        const from = chunk * CHUNK_PAGES;
        const last = Math.min(from + CHUNK_PAGES, block.meta.pages);
        const stored: StoredPage[] = [];
        for (let page = from; page < last; page++) {
          if (!block.present.get(page)) continue;
          const offset = (page - current * CHUNK_PAGES) * PAGE_SIZE;
          stored.push({ page, data: bytes.subarray(offset, offset + PAGE_SIZE) });
        }
        if (stored.length > 0) yield stored;
      }
    }
  }

  /** Checks every chunk of every block; returns one problem per damaged block (empty when intact). */
  async verify(): Promise<{ file: string; problem: string }[]> {
    const damages: { file: string; problem: string }[] = [];
    for (const block of this.#blocks.values()) {
      const damaged = await scanRawImage(
        await this.#handle(block),
        block.label,
        block.meta.pages,
        block.sums,
      );
      if (damaged.length === 0) {
        for (let chunk = 0; chunk < block.verified.size; chunk++) block.verified.set(chunk);
      } else {
        damages.push({ file: block.meta.file, problem: describeChunks(damaged) });
      }
    }
    return damages;
  }

  async close(): Promise<void> {
    const closing = [...this.#blocks.values()].map(async (block) => {
      const handle = block.handle;
      block.handle = undefined;
      if (block.fd !== undefined) {
        try {
          closeSync(block.fd);
        } catch {
          // already closed
        }
        block.fd = undefined;
      }
      if (handle !== undefined) await handle.then((open) => open.close()).catch(() => undefined);
    });
    await Promise.all(closing);
  }
}

export function describeChunks(chunks: readonly number[]): string {
  const shown = chunks.slice(0, 8).join(", ");
  const more = chunks.length > 8 ? ` and ${chunks.length - 8} more` : "";
  return `chunk${chunks.length === 1 ? "" : "s"} ${shown}${more} checksum mismatch`;
}
