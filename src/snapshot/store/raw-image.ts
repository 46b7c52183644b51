import type { FileHandle } from "node:fs/promises";
import { chunkLength, chunkSum, isZero, zeroChunkSum } from "./chunk-sum.ts";
import { corrupt, readError } from "./errors.ts";
import { readFully } from "./fs-io.ts";
import { CHUNK_PAGES, PAGE_SIZE } from "./layout.ts";
import { chunkCount, CHUNK_SUM_BYTES } from "./memory-index.ts";

/**
 * Checked chunk reads of a raw memory image against its index's chunk checksums. A chunk whose
 * expected checksum is that of zeros is checked with a memcmp (holes are the common case).
 */

export function expectedSum(sums: Buffer, chunk: number): Buffer {
  return sums.subarray(chunk * CHUNK_SUM_BYTES, (chunk + 1) * CHUNK_SUM_BYTES);
}

export function chunkMatches(bytes: Buffer, expected: Buffer): boolean {
  if (expected.equals(zeroChunkSum(bytes.length))) return isZero(bytes);
  return chunkSum(bytes).equals(expected);
}

/** Reads chunk `chunk` into a new buffer and checks it; SNAPSHOT_CORRUPT names the file and chunk. */
export async function readCheckedChunk(
  handle: FileHandle,
  label: string,
  pageCount: number,
  sums: Buffer,
  chunk: number,
): Promise<Buffer> {
  const length = chunkLength(chunk, pageCount);
  const buffer = Buffer.allocUnsafe(length);
  let read: number;
  try {
    read = await readFully(handle, buffer, length, chunk * CHUNK_PAGES * PAGE_SIZE);
  } catch (error) {
    throw readError(label, error);
  }
  if (read !== length) throw corrupt(label, `chunk ${chunk} truncated`);
  if (!chunkMatches(buffer, expectedSum(sums, chunk))) {
    throw corrupt(label, `chunk ${chunk} checksum mismatch`);
  }
  return buffer;
}

/**
 * Checks every chunk of an image, reading one chunk ahead while the current one is hashed.
 * Returns the numbers of the damaged chunks (reads past the end count as damage).
 */
export async function scanRawImage(
  handle: FileHandle,
  label: string,
  pageCount: number,
  sums: Buffer,
): Promise<number[]> {
  const chunks = chunkCount(pageCount);
  const damaged: number[] = [];
  const buffers = [Buffer.allocUnsafe(CHUNK_PAGES * PAGE_SIZE), Buffer.allocUnsafe(CHUNK_PAGES * PAGE_SIZE)];
  const start = (chunk: number): Promise<number> => {
    const buffer = buffers[chunk % 2] ?? Buffer.alloc(0);
    return readFully(handle, buffer, chunkLength(chunk, pageCount), chunk * CHUNK_PAGES * PAGE_SIZE);
  };
  let pending = chunks > 0 ? start(0) : undefined;
  try {
    for (let chunk = 0; chunk < chunks && pending !== undefined; chunk++) {
      const read = await pending;
      pending = chunk + 1 < chunks ? start(chunk + 1) : undefined;
      const length = chunkLength(chunk, pageCount);
      const bytes = (buffers[chunk % 2] ?? Buffer.alloc(0)).subarray(0, read);
      if (read !== length || !chunkMatches(bytes, expectedSum(sums, chunk))) damaged.push(chunk);
    }
  } catch (error) {
    throw readError(label, error);
  } finally {
    await pending?.catch(() => undefined);
  }
  return damaged;
}
