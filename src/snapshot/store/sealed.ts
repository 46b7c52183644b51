import { createHash } from "node:crypto";
import { corrupt, unsupportedVersion } from "./errors.ts";

/**
 * The envelope shared by the store's binary files (index, working set, in-flight frames):
 *
 *   offset  size  field
 *   0       4     magic (ASCII, one per file kind)
 *   4       2     format version, u16 little-endian
 *   6       2     flags, u16 LE, 0 in version 1
 *   8       n     body (defined by each file kind)
 *   8+n     32    sha256 of bytes [0, 8+n)
 *
 * Versioning rule: the envelope itself never changes; a body that an older reader could not
 * read bumps the version, and an older reader refuses it (SNAPSHOT_VERSION_UNSUPPORTED).
 * Read order: size, magic, checksum, version; bodies are then parsed through `BodyReader`, which
 * throws SNAPSHOT_CORRUPT instead of ever reading out of bounds.
 */

export const HEADER_BYTES = 8;
export const CHECKSUM_BYTES = 32;
const MAGIC_OFFSET = 0;
const VERSION_OFFSET = 4;
const FLAGS_OFFSET = 6;

export function seal(magic: string, version: number, body: Buffer): Buffer {
  const out = Buffer.alloc(HEADER_BYTES + body.length + CHECKSUM_BYTES);
  out.write(magic, MAGIC_OFFSET, 4, "latin1");
  out.writeUInt16LE(version, VERSION_OFFSET);
  out.writeUInt16LE(0, FLAGS_OFFSET);
  body.copy(out, HEADER_BYTES);
  const end = HEADER_BYTES + body.length;
  createHash("sha256").update(out.subarray(0, end)).digest().copy(out, end);
  return out;
}

/**
 * Checks the envelope of `file`'s bytes and returns a reader over its body. `verified`: the caller
 * already matched these exact bytes against the sha256 the (checksummed) manifest lists for the
 * file, so hashing them again proves nothing more; everything else is still checked.
 */
export function unseal(
  file: string,
  bytes: Buffer,
  magic: string,
  supported: number,
  verified = false,
): BodyReader {
  if (bytes.length < HEADER_BYTES + CHECKSUM_BYTES) {
    throw corrupt(file, `too short (${bytes.length} bytes)`);
  }
  if (bytes.toString("latin1", MAGIC_OFFSET, MAGIC_OFFSET + 4) !== magic) {
    throw corrupt(file, `bad magic (expected ${magic})`);
  }
  const end = bytes.length - CHECKSUM_BYTES;
  if (!verified) {
    const actual = createHash("sha256").update(bytes.subarray(0, end)).digest();
    if (!actual.equals(bytes.subarray(end))) throw corrupt(file, "checksum mismatch");
  }
  const version = bytes.readUInt16LE(VERSION_OFFSET);
  if (version > supported) throw unsupportedVersion(file, version, supported);
  if (version < 1) throw corrupt(file, `bad format version ${version}`);
  if (bytes.readUInt16LE(FLAGS_OFFSET) !== 0) throw corrupt(file, "unknown flags");
  return new BodyReader(file, bytes.subarray(HEADER_BYTES, end));
}

/** Bounds-checked little-endian reads over a body; every overrun is SNAPSHOT_CORRUPT. */
export class BodyReader {
  readonly file: string;
  readonly #bytes: Buffer;
  #offset = 0;

  constructor(file: string, bytes: Buffer) {
    this.file = file;
    this.#bytes = bytes;
  }

  get remaining(): number {
    return this.#bytes.length - this.#offset;
  }

  #take(length: number, what: string): number {
    if (length > this.remaining) {
      throw corrupt(this.file, `truncated ${what} at body offset ${this.#offset}`);
    }
    const at = this.#offset;
    this.#offset += length;
    return at;
  }

  u8(what: string): number {
    return this.#bytes.readUInt8(this.#take(1, what));
  }

  u16(what: string): number {
    return this.#bytes.readUInt16LE(this.#take(2, what));
  }

  u32(what: string): number {
    return this.#bytes.readUInt32LE(this.#take(4, what));
  }

  /** A view (no copy) of the next `length` bytes. */
  bytes(length: number, what: string): Buffer {
    const at = this.#take(length, what);
    return this.#bytes.subarray(at, at + length);
  }

  /** Refuses trailing bytes after the last field. */
  end(): void {
    if (this.remaining !== 0) throw corrupt(this.file, `${this.remaining} unexpected bytes after the data`);
  }
}
