/**
 * The FUSE device protocol (/dev/fuse), the part our one-file read-only server speaks. Pure.
 * Authority: the kernel's include/uapi/linux/fuse.h; the bytes were checked against the kernel
 * here (6.18, which offers protocol 7.45: we answer 7.31 and the kernel speaks the lower one).
 * All integers little-endian (the host's order: the device is local).
 *
 * One read(2) of the device returns exactly one request, one write(2) carries one reply or one
 * notification: there is no stream to reassemble, but a request shorter than its header or its
 * opcode's body is refused here (FuseWireError) before any field is used.
 *
 *   request  = in_header(40) body
 *     in_header: len u32 @0 | opcode u32 @4 | unique u64 @8 | nodeid u64 @16 | uid u32 @24 |
 *                gid u32 @28 | pid u32 @32 | total_extlen u16 @36 | padding u16 @38
 *   reply    = out_header(16) body          out_header: len u32 @0 | error i32 @4 | unique u64 @8
 *   notify   = out_header with unique 0 and error = notify code, then the notification's body
 *
 * Bodies used (offsets inside the body):
 *   INIT in      major u32 @0 | minor u32 @4 | max_readahead u32 @8 | flags u32 @12 (16+ bytes) |
 *                flags2 u32 @16 (7.36+, meaningful when flags has INIT_EXT)
 *   INIT out(64) major @0 | minor @4 | max_readahead @8 | flags @12 | max_background u16 @16 |
 *                congestion_threshold u16 @18 | max_write u32 @20 | time_gran u32 @24 |
 *                max_pages u16 @28 | map_alignment u16 @30 | flags2 u32 @32 (with INIT_EXT) |
 *                max_stack_depth u32 @36 | request_timeout u16 @40 (seconds, 7.43+) | zeros
 *   LOOKUP in    name, NUL-terminated
 *   entry_out(128) nodeid u64 @0 | generation u64 @8 | entry_valid u64 @16 | attr_valid u64 @24 |
 *                entry_valid_nsec u32 @32 | attr_valid_nsec u32 @36 | attr(88) @40
 *   attr(88)     ino u64 @0 | size u64 @8 | blocks u64 @16 | atime, mtime, ctime u64 @24/32/40 |
 *                atimensec, mtimensec, ctimensec u32 @48/52/56 | mode u32 @60 | nlink u32 @64 |
 *                uid u32 @68 | gid u32 @72 | rdev u32 @76 | blksize u32 @80 | flags u32 @84
 *   attr_out(104) attr_valid u64 @0 | attr_valid_nsec u32 @8 | dummy u32 @12 | attr(88) @16
 *   OPEN out(16) fh u64 @0 | open_flags u32 @8 | padding u32 @12
 *   READ in(40)  fh u64 @0 | offset u64 @8 | size u32 @16 | read_flags u32 @20 | lock_owner u64 @24 |
 *                flags u32 @32 | padding u32 @36;          READ out: the bytes
 *   STATFS out(80) blocks, bfree, bavail, files, ffree u64 | bsize, namelen, frsize u32 | zeros
 *   NOTIFY_STORE (code 4) nodeid u64 @0 | offset u64 @8 | size u32 @16 | padding u32 @20 | data
 *
 * FORGET, BATCH_FORGET and INTERRUPT take no reply. Errors are negative errnos in out_header.
 */

export const IN_HEADER_BYTES = 40;
export const OUT_HEADER_BYTES = 16;
export const ROOT_NODE = 1n;

export const FUSE_MAJOR = 7;
/** The minor we answer: 7.31 has max_pages (reads up to 1 MiB) and everything else we use. */
export const FUSE_MINOR = 31;

export const Opcode = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42,
} as const;

export const NOTIFY_STORE = 4;

/** INIT flags we ask for: reads may be concurrent; reads of up to max_pages pages. */
export const INIT_ASYNC_READ = 1 << 0;
export const INIT_MAX_PAGES = 1 << 22;
/** flags2 is valid (in both directions). */
export const INIT_EXT = 1 << 30;
/** flags2 bit (FUSE_REQUEST_TIMEOUT, 1 << 42): the kernel aborts the connection when a request waits longer. */
export const INIT2_REQUEST_TIMEOUT = 1 << 10;

/** open_flags: keep the page cache across opens (the file never changes). */
export const FOPEN_KEEP_CACHE = 1 << 1;
/**
 * open_flags: no FLUSH on close. Without it every close waits for our answer, and a process that
 * dies holding the file (QEMU, or the daemon itself with its pin, killed while it serves) hung in
 * D state in fuse_flush once its server thread was gone (seen in CI after SIGKILLed daemons).
 */
export const FOPEN_NOFLUSH = 1 << 5;

export const Errno = { ENOENT: 2, EIO: 5, EROFS: 30, ENOSYS: 38 } as const;

export class FuseWireError extends Error {
  override readonly name = "FuseWireError";
}

export interface FuseRequest {
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  /** The bytes after the header (a view into the read buffer: copy to keep). */
  body: Buffer;
}

export function decodeRequest(bytes: Buffer): FuseRequest {
  if (bytes.length < IN_HEADER_BYTES) {
    throw new FuseWireError(`request of ${bytes.length} bytes is shorter than its header`);
  }
  const len = bytes.readUInt32LE(0);
  if (len !== bytes.length) {
    throw new FuseWireError(`request says ${len} bytes, ${bytes.length} were read`);
  }
  return {
    opcode: bytes.readUInt32LE(4),
    unique: bytes.readBigUInt64LE(8),
    nodeid: bytes.readBigUInt64LE(16),
    body: bytes.subarray(IN_HEADER_BYTES),
  };
}

function need(request: FuseRequest, bytes: number, what: string): void {
  if (request.body.length < bytes) {
    throw new FuseWireError(`${what} body of ${request.body.length} bytes, at least ${bytes} expected`);
  }
}

export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  /** 0 unless the kernel sent it (flags has INIT_EXT). */
  flags2: number;
}

export function decodeInit(request: FuseRequest): InitIn {
  need(request, 16, "INIT");
  const { body } = request;
  return {
    major: body.readUInt32LE(0),
    minor: body.readUInt32LE(4),
    maxReadahead: body.readUInt32LE(8),
    flags: body.readUInt32LE(12),
    flags2: (body.readUInt32LE(12) & INIT_EXT) !== 0 && body.length >= 20 ? body.readUInt32LE(16) : 0,
  };
}

export function decodeLookupName(request: FuseRequest): string {
  const end = request.body.indexOf(0);
  if (end < 0) throw new FuseWireError("LOOKUP name is not NUL-terminated");
  return request.body.subarray(0, end).toString("utf8");
}

export interface ReadIn {
  fh: bigint;
  offset: number;
  size: number;
}

export function decodeRead(request: FuseRequest): ReadIn {
  need(request, 40, "READ");
  const offset = request.body.readBigUInt64LE(8);
  if (offset > BigInt(Number.MAX_SAFE_INTEGER)) throw new FuseWireError(`READ offset ${offset} too large`);
  return { fh: request.body.readBigUInt64LE(0), offset: Number(offset), size: request.body.readUInt32LE(16) };
}

/** out_header + body, or a bare header for an error / an empty reply. */
export function encodeReply(unique: bigint, error: number, body?: Buffer): Buffer {
  const out = Buffer.alloc(OUT_HEADER_BYTES + (body?.length ?? 0));
  out.writeUInt32LE(out.length, 0);
  out.writeInt32LE(error === 0 ? 0 : -Math.abs(error), 4);
  out.writeBigUInt64LE(unique, 8);
  body?.copy(out, OUT_HEADER_BYTES);
  return out;
}

/** The out_header alone, for a reply whose body is written from a second buffer (writev). */
export function encodeReplyHeader(unique: bigint, bodyBytes: number): Buffer {
  const out = Buffer.alloc(OUT_HEADER_BYTES);
  out.writeUInt32LE(OUT_HEADER_BYTES + bodyBytes, 0);
  out.writeBigUInt64LE(unique, 8);
  return out;
}

export interface InitOut {
  maxReadahead: number;
  flags: number;
  maxPages: number;
  maxWrite: number;
  flags2?: number;
  /** Seconds; sent with INIT2_REQUEST_TIMEOUT in flags2. */
  requestTimeoutSec?: number;
}

export function encodeInitOut(init: InitOut): Buffer {
  const out = Buffer.alloc(64);
  out.writeUInt32LE(FUSE_MAJOR, 0);
  out.writeUInt32LE(FUSE_MINOR, 4);
  out.writeUInt32LE(init.maxReadahead, 8);
  out.writeUInt32LE(init.flags, 12);
  out.writeUInt16LE(16, 16); // max_background
  out.writeUInt16LE(12, 18); // congestion_threshold
  out.writeUInt32LE(init.maxWrite, 20);
  out.writeUInt32LE(1, 24); // time_gran: 1 ns
  out.writeUInt16LE(init.maxPages, 28);
  out.writeUInt32LE(init.flags2 ?? 0, 32);
  out.writeUInt16LE(init.requestTimeoutSec ?? 0, 40);
  return out;
}

export interface Attr {
  ino: bigint;
  size: number;
  /** st_mode, type bits included (0o100400 a read-only file, 0o40500 a directory). */
  mode: number;
  mtimeSec: number;
}

export function encodeAttr(attr: Attr): Buffer {
  const out = Buffer.alloc(88);
  out.writeBigUInt64LE(attr.ino, 0);
  out.writeBigUInt64LE(BigInt(attr.size), 8);
  out.writeBigUInt64LE(BigInt(Math.ceil(attr.size / 512)), 16);
  for (const at of [24, 32, 40]) out.writeBigUInt64LE(BigInt(attr.mtimeSec), at);
  out.writeUInt32LE(attr.mode, 60);
  out.writeUInt32LE(1, 64); // nlink
  out.writeUInt32LE(4096, 80); // blksize
  return out;
}

/** Attributes and entries are valid this long (s): nothing here ever changes. */
const VALID_S = 86_400n;

export function encodeAttrOut(attr: Attr): Buffer {
  const head = Buffer.alloc(16);
  head.writeBigUInt64LE(VALID_S, 0);
  return Buffer.concat([head, encodeAttr(attr)]);
}

export function encodeEntryOut(attr: Attr): Buffer {
  const head = Buffer.alloc(40);
  head.writeBigUInt64LE(attr.ino, 0);
  head.writeBigUInt64LE(VALID_S, 16);
  head.writeBigUInt64LE(VALID_S, 24);
  return Buffer.concat([head, encodeAttr(attr)]);
}

export function encodeOpenOut(fh: bigint, openFlags: number): Buffer {
  const out = Buffer.alloc(16);
  out.writeBigUInt64LE(fh, 0);
  out.writeUInt32LE(openFlags, 8);
  return out;
}

export function encodeStatfsOut(): Buffer {
  const out = Buffer.alloc(80);
  out.writeUInt32LE(4096, 40); // bsize
  out.writeUInt32LE(255, 44); // namelen
  out.writeUInt32LE(4096, 48); // frsize
  return out;
}

/** The header of a NOTIFY_STORE of `size` bytes at `offset` of `nodeid`; the data follows it. */
export const NOTIFY_STORE_HEADER_BYTES = OUT_HEADER_BYTES + 24;

export function encodeNotifyStoreHeader(nodeid: bigint, offset: number, size: number): Buffer {
  const out = Buffer.alloc(NOTIFY_STORE_HEADER_BYTES);
  out.writeUInt32LE(NOTIFY_STORE_HEADER_BYTES + size, 0);
  out.writeInt32LE(NOTIFY_STORE, 4);
  out.writeBigUInt64LE(nodeid, OUT_HEADER_BYTES);
  out.writeBigUInt64LE(BigInt(offset), OUT_HEADER_BYTES + 8);
  out.writeUInt32LE(size, OUT_HEADER_BYTES + 16);
  return out;
}

export interface NotifyStore {
  nodeid: bigint;
  offset: number;
  data: Buffer;
}

/** Reads a NOTIFY_STORE back (tests; the kernel is the real reader). */
export function decodeNotifyStore(bytes: Buffer): NotifyStore {
  if (bytes.length < NOTIFY_STORE_HEADER_BYTES)
    throw new FuseWireError("NOTIFY_STORE shorter than its header");
  if (bytes.readUInt32LE(0) !== bytes.length) throw new FuseWireError("NOTIFY_STORE length mismatch");
  if (bytes.readInt32LE(4) !== NOTIFY_STORE || bytes.readBigUInt64LE(8) !== 0n) {
    throw new FuseWireError("not a NOTIFY_STORE");
  }
  const size = bytes.readUInt32LE(OUT_HEADER_BYTES + 16);
  if (NOTIFY_STORE_HEADER_BYTES + size !== bytes.length)
    throw new FuseWireError("NOTIFY_STORE size mismatch");
  return {
    nodeid: bytes.readBigUInt64LE(OUT_HEADER_BYTES),
    offset: Number(bytes.readBigUInt64LE(OUT_HEADER_BYTES + 8)),
    data: bytes.subarray(NOTIFY_STORE_HEADER_BYTES),
  };
}

/** Reads a reply back (tests): header fields and body. */
export function decodeReply(bytes: Buffer): { error: number; unique: bigint; body: Buffer } {
  if (bytes.length < OUT_HEADER_BYTES || bytes.readUInt32LE(0) !== bytes.length) {
    throw new FuseWireError("reply length mismatch");
  }
  return {
    error: bytes.readInt32LE(4),
    unique: bytes.readBigUInt64LE(8),
    body: bytes.subarray(OUT_HEADER_BYTES),
  };
}

/** A request as the kernel writes it (tests, and fixtures of real bytes). */
export function encodeRequest(opcode: number, unique: bigint, nodeid: bigint, body: Buffer): Buffer {
  const out = Buffer.alloc(IN_HEADER_BYTES + body.length);
  out.writeUInt32LE(out.length, 0);
  out.writeUInt32LE(opcode, 4);
  out.writeBigUInt64LE(unique, 8);
  out.writeBigUInt64LE(nodeid, 16);
  body.copy(out, IN_HEADER_BYTES);
  return out;
}
