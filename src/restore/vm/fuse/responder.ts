import {
  decodeInit,
  decodeLookupName,
  decodeRead,
  decodeRequest,
  encodeAttrOut,
  encodeEntryOut,
  encodeInitOut,
  encodeOpenOut,
  encodeReply,
  encodeReplyHeader,
  encodeStatfsOut,
  Errno,
  FOPEN_KEEP_CACHE,
  FOPEN_NOFLUSH,
  FUSE_MAJOR,
  FuseWireError,
  INIT2_REQUEST_TIMEOUT,
  INIT_ASYNC_READ,
  INIT_EXT,
  INIT_MAX_PAGES,
  Opcode,
  ROOT_NODE,
  type Attr,
} from "./wire.ts";

/**
 * Answers the kernel's requests for a FUSE file system that holds one read-only file (a guest's
 * RAM image). Pure apart from `read`, which the caller supplies: it returns the file's checked
 * bytes or throws. The I/O loop around it is fuse-worker.ts.
 *
 * The one file is node FILE_NODE; the root (node 1) lists nothing but answers LOOKUP of the name.
 * Writes and attribute changes are refused with EROFS: QEMU maps the file MAP_PRIVATE and never
 * writes it, so a write means someone else, and they must not change a snapshot.
 */
export const FILE_NODE = 2n;

export interface ServedFile {
  name: string;
  size: number;
  mtimeSec: number;
}

export interface ResponderOptions {
  /** Read-ahead the kernel may do on a page cache miss (bytes; the kernel takes the lower of ours and its). */
  maxReadahead: number;
  /** Largest READ (pages). */
  maxPages: number;
  /**
   * Ask the kernel to abort the connection when a request waits longer than this (seconds; it
   * takes at least 15 and checks every 15). 0: do not ask.
   */
  requestTimeoutSec?: number;
}

/** What a READ asked for, how it went, for the fault log. */
export interface ReadEvent {
  offset: number;
  size: number;
  /** The error sent instead of the bytes (e.g. damage); undefined when the bytes went out. */
  error?: unknown;
}

export type Reply = Buffer[] | undefined;

export class FuseFileResponder {
  readonly #file: ServedFile;
  readonly #options: ResponderOptions;
  readonly #read: (offset: number, size: number) => Buffer;
  /** Set by INIT; requests before it are refused (the kernel never sends any). */
  #initialised = false;
  lastRead: ReadEvent | undefined;
  /** The request timeout the kernel was asked for at INIT; null when none (or not offered). */
  requestTimeoutSec: number | null = null;

  constructor(file: ServedFile, options: ResponderOptions, read: (offset: number, size: number) => Buffer) {
    this.#file = file;
    this.#options = options;
    this.#read = read;
  }

  #attr(node: bigint): Attr | undefined {
    if (node === ROOT_NODE) return { ino: ROOT_NODE, size: 0, mode: 0o40500, mtimeSec: this.#file.mtimeSec };
    if (node === FILE_NODE) {
      return { ino: FILE_NODE, size: this.#file.size, mode: 0o100600, mtimeSec: this.#file.mtimeSec };
    }
    return undefined;
  }

  /** The reply to one request (buffers written together, one writev), or undefined for none. */
  handle(bytes: Buffer): Reply {
    const request = decodeRequest(bytes);
    const { unique, nodeid } = request;
    const ok = (body?: Buffer): Reply => [encodeReply(unique, 0, body)];
    const fail = (errno: number): Reply => [encodeReply(unique, errno)];
    this.lastRead = undefined;
    if (request.opcode !== Opcode.INIT && !this.#initialised) return fail(Errno.EIO);
    switch (request.opcode) {
      case Opcode.INIT: {
        const init = decodeInit(request);
        if (init.major !== FUSE_MAJOR) {
          throw new FuseWireError(`kernel speaks FUSE ${init.major}.${init.minor}, we speak ${FUSE_MAJOR}.x`);
        }
        this.#initialised = true;
        const timeout = this.#options.requestTimeoutSec ?? 0;
        const offered = (init.flags2 & INIT2_REQUEST_TIMEOUT) !== 0;
        this.requestTimeoutSec = offered && timeout > 0 ? timeout : null;
        return ok(
          encodeInitOut({
            maxReadahead: this.#options.maxReadahead,
            flags: INIT_ASYNC_READ | INIT_MAX_PAGES | (this.requestTimeoutSec === null ? 0 : INIT_EXT),
            maxPages: this.#options.maxPages,
            maxWrite: 4096,
            ...(this.requestTimeoutSec === null
              ? {}
              : { flags2: INIT2_REQUEST_TIMEOUT, requestTimeoutSec: this.requestTimeoutSec }),
          }),
        );
      }
      case Opcode.LOOKUP: {
        if (nodeid !== ROOT_NODE || decodeLookupName(request) !== this.#file.name) return fail(Errno.ENOENT);
        return ok(encodeEntryOut(this.#attr(FILE_NODE)!));
      }
      case Opcode.GETATTR: {
        const attr = this.#attr(nodeid);
        return attr === undefined ? fail(Errno.ENOENT) : ok(encodeAttrOut(attr));
      }
      case Opcode.OPEN:
      case Opcode.OPENDIR:
        return ok(encodeOpenOut(0n, FOPEN_KEEP_CACHE | FOPEN_NOFLUSH));
      case Opcode.READ:
        return this.#readReply(request.unique, nodeid, decodeRead(request));
      case Opcode.READDIR:
        return ok();
      case Opcode.STATFS:
        return ok(encodeStatfsOut());
      case Opcode.RELEASE:
      case Opcode.RELEASEDIR:
      case Opcode.FLUSH:
      case Opcode.DESTROY:
        return ok();
      case Opcode.WRITE:
      case Opcode.SETATTR:
        return fail(Errno.EROFS);
      case Opcode.FORGET:
      case Opcode.BATCH_FORGET:
      case Opcode.INTERRUPT:
        return undefined;
      default:
        return fail(Errno.ENOSYS);
    }
  }

  #readReply(unique: bigint, nodeid: bigint, read: { offset: number; size: number }): Reply {
    if (nodeid !== FILE_NODE) return [encodeReply(unique, Errno.EIO)];
    const size = Math.max(0, Math.min(read.size, this.#file.size - read.offset));
    this.lastRead = { offset: read.offset, size };
    if (size === 0) return [encodeReply(unique, 0)];
    let data: Buffer;
    try {
      data = this.#read(read.offset, size);
    } catch (error) {
      this.lastRead.error = error;
      return [encodeReply(unique, Errno.EIO)];
    }
    return [encodeReplyHeader(unique, data.length), data];
  }
}
