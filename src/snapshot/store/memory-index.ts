import { Bitmap } from "./bitmap.ts";
import { CHUNK_PAGES, PAGE_SIZE } from "./layout.ts";
import { corrupt } from "./errors.ts";
import { CHECKSUM_BYTES, HEADER_BYTES, seal, unseal } from "./sealed.ts";

/**
 * `ram/<block>.idx`: which pages of `ram/<block>.raw` are stored, and a checksum per chunk.
 * Inside the envelope of sealed.ts (magic "HRMI", version 1), the body is:
 *
 *   offset  size          field
 *   0       4             page size, u32 LE (4096)
 *   4       4             page count P, u32 LE (the raw file is exactly P * page size bytes)
 *   8       4             pages per chunk, u32 LE (256)
 *   12      4             present pages, u32 LE (= bits set in the bitmap)
 *   16      ceil(P/8)     present bitmap (bitmap.ts); a clear bit is a zero page (a hole)
 *   ..      C * 16        chunk checksums, C = ceil(P/256): sha256 of the chunk's bytes as read
 *                         from the raw file (holes read as zeros; the last chunk may be short),
 *                         truncated to 16 bytes
 *
 * The reader checks the exact expected length from P before touching the bitmap, so a damaged
 * count can never make it allocate or read past the file.
 */

export const INDEX_MAGIC = "HRMI";
export const INDEX_VERSION = 1;
export const CHUNK_SUM_BYTES = 16;
const FIXED_BYTES = 16;

export interface MemoryIndex {
  pageCount: number;
  present: Bitmap;
  /** `chunkCount(pageCount)` checksums of CHUNK_SUM_BYTES each, concatenated. */
  chunkSums: Buffer;
}

export function chunkCount(pageCount: number): number {
  return Math.ceil(pageCount / CHUNK_PAGES);
}

/** The exact size of the index file of a block of `pageCount` pages. */
export function indexFileSize(pageCount: number): number {
  return (
    HEADER_BYTES +
    FIXED_BYTES +
    Bitmap.byteLength(pageCount) +
    chunkCount(pageCount) * CHUNK_SUM_BYTES +
    CHECKSUM_BYTES
  );
}

export function encodeMemoryIndex(index: MemoryIndex): Buffer {
  const bitmapBytes = Bitmap.byteLength(index.pageCount);
  const body = Buffer.alloc(FIXED_BYTES + bitmapBytes + index.chunkSums.length);
  body.writeUInt32LE(PAGE_SIZE, 0);
  body.writeUInt32LE(index.pageCount, 4);
  body.writeUInt32LE(CHUNK_PAGES, 8);
  body.writeUInt32LE(index.present.count(), 12);
  index.present.bytes.copy(body, FIXED_BYTES, 0, bitmapBytes);
  index.chunkSums.copy(body, FIXED_BYTES + bitmapBytes);
  return seal(INDEX_MAGIC, INDEX_VERSION, body);
}

export function decodeMemoryIndex(file: string, bytes: Buffer): MemoryIndex {
  const body = unseal(file, bytes, INDEX_MAGIC, INDEX_VERSION);
  const pageSize = body.u32("page size");
  const pageCount = body.u32("page count");
  const chunkPages = body.u32("chunk size");
  const presentCount = body.u32("present count");
  if (pageSize !== PAGE_SIZE) throw corrupt(file, `unsupported page size ${pageSize}`);
  if (chunkPages !== CHUNK_PAGES) throw corrupt(file, `unsupported chunk size ${chunkPages} pages`);
  const bitmapBytes = Bitmap.byteLength(pageCount);
  const sumBytes = chunkCount(pageCount) * CHUNK_SUM_BYTES;
  if (body.remaining !== bitmapBytes + sumBytes) {
    throw corrupt(file, `${body.remaining} body bytes after the header, expected ${bitmapBytes + sumBytes}`);
  }
  const present = new Bitmap(pageCount, Buffer.from(body.bytes(bitmapBytes, "bitmap")));
  const chunkSums = Buffer.from(body.bytes(sumBytes, "chunk checksums"));
  body.end();
  if (!present.tailIsClear()) throw corrupt(file, "bits set past the last page");
  const counted = present.count();
  if (counted !== presentCount) {
    throw corrupt(file, `present count ${presentCount} but ${counted} bits set`);
  }
  return { pageCount, present, chunkSums };
}
