import { createHash, randomBytes } from "node:crypto";
import { open, rename, rm, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import { corrupt, readError, writeError } from "./errors.ts";

/** File helpers of the store: durable writes, atomic replacement, bounded reads. */

/** Reads exactly `length` bytes at `position` (regular files only return short reads at EOF). */
export async function readFully(
  handle: FileHandle,
  into: Buffer,
  length: number,
  position: number,
): Promise<number> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(into, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Reads a whole file, refusing one larger than `maxBytes` before allocating for it. */
export async function readLimited(path: string, label: string, maxBytes: number): Promise<Buffer> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, "r");
    const { size } = await handle.stat();
    if (size > maxBytes) throw corrupt(label, `${size} bytes, more than the ${maxBytes} allowed`);
    const bytes = Buffer.alloc(size);
    const read = await readFully(handle, bytes, size, 0);
    if (read !== size) throw corrupt(label, "changed size while being read");
    return bytes;
  } catch (error) {
    throw readError(label, error);
  } finally {
    await handle?.close();
  }
}

/** Writes `data` to a new file (or replaces one), fsyncs and closes it. */
export async function writeDurable(path: string, label: string, data: Buffer | string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, "w", 0o600);
    await handle.writeFile(data);
    await handle.sync();
  } catch (error) {
    throw writeError(label, error);
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/** Replaces `path` atomically: temp file in the same directory, fsync, rename, fsync the directory. */
export async function replaceAtomically(path: string, label: string, data: Buffer | string): Promise<void> {
  const temp = `${path}.tmp-${randomBytes(4).toString("hex")}`;
  try {
    await writeDurable(temp, label, data);
    await rename(temp, path);
    await fsyncDir(dirname(path));
  } catch (error) {
    await rm(temp, { force: true });
    throw writeError(label, error);
  }
}

/** fsync of a file or directory by path. */
export async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export function sha256Hex(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

export const fsyncDir = fsyncFile;

const HASH_BUFFER_BYTES = 1 << 20;

/** sha256 of a whole file, read 1 MiB at a time. */
export async function sha256OfFile(path: string, label: string): Promise<{ sha256: string; size: number }> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(path, "r");
    const hash = createHash("sha256");
    const buffer = Buffer.allocUnsafe(HASH_BUFFER_BYTES);
    let size = 0;
    for (;;) {
      const read = await readFully(handle, buffer, HASH_BUFFER_BYTES, size);
      hash.update(buffer.subarray(0, read));
      size += read;
      if (read < HASH_BUFFER_BYTES) break;
    }
    return { sha256: hash.digest("hex"), size };
  } catch (error) {
    throw readError(label, error);
  } finally {
    await handle?.close();
  }
}
