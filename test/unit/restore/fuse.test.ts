import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { connectionOf, parseFuseMounts } from "../../../src/restore/vm/fuse/mount.ts";
import { FILE_NODE, FuseFileResponder } from "../../../src/restore/vm/fuse/responder.ts";
import {
  decodeInit,
  decodeLookupName,
  decodeNotifyStore,
  decodeRead,
  decodeReply,
  decodeRequest,
  encodeNotifyStoreHeader,
  encodeRequest,
  Errno,
  FuseWireError,
  IN_HEADER_BYTES,
  INIT2_REQUEST_TIMEOUT,
  INIT_ASYNC_READ,
  INIT_EXT,
  INIT_MAX_PAGES,
  Opcode,
  ROOT_NODE,
} from "../../../src/restore/vm/fuse/wire.ts";
import { fillOrder, pageRuns } from "../../../src/restore/vm/kernel-paged.ts";

/** Requests this machine's kernel (6.18) wrote to /dev/fuse, captured once (test/fixtures/fuse). */
const real = (name: string): Buffer =>
  readFileSync(new URL(`../../fixtures/fuse/${name}.bin`, import.meta.url));

function initBody(major = 7, minor = 45): Buffer {
  const body = Buffer.alloc(64);
  body.writeUInt32LE(major, 0);
  body.writeUInt32LE(minor, 4);
  body.writeUInt32LE(131072, 8);
  return body;
}

function readBody(offset: number, size: number): Buffer {
  const body = Buffer.alloc(40);
  body.writeBigUInt64LE(BigInt(offset), 8);
  body.writeUInt32LE(size, 16);
  return body;
}

const FILE = { name: "ram0.raw", size: 10 * 4096 + 100, mtimeSec: 1_700_000_000 };
const IMAGE = Buffer.alloc(FILE.size);
for (let i = 0; i < IMAGE.length; i++) IMAGE[i] = (i * 7) & 0xff;

function responder(read: (offset: number, size: number) => Buffer = (o, n) => IMAGE.subarray(o, o + n)) {
  const r = new FuseFileResponder(FILE, { maxReadahead: 0, maxPages: 16 }, read);
  r.handle(encodeRequest(Opcode.INIT, 1n, 0n, initBody()));
  return r;
}

function one(reply: Buffer[] | undefined): { error: number; unique: bigint; body: Buffer } {
  assert.ok(reply, "a reply");
  return decodeReply(Buffer.concat(reply));
}

describe("FUSE wire format", () => {
  it("reads the kernel's real requests: INIT, LOOKUP, OPEN, READ", () => {
    const init = decodeRequest(real("init"));
    assert.equal(init.opcode, Opcode.INIT);
    const fields = decodeInit(init);
    assert.equal(fields.major, 7);
    assert.ok(fields.minor >= 31, `kernel minor ${fields.minor}`);
    const lookup = decodeRequest(real("lookup"));
    assert.equal(lookup.opcode, Opcode.LOOKUP);
    assert.equal(lookup.nodeid, ROOT_NODE);
    assert.equal(decodeLookupName(lookup), "ram0.raw");
    const open = decodeRequest(real("open"));
    assert.equal(open.opcode, Opcode.OPEN);
    assert.equal(open.nodeid, FILE_NODE);
    const read = decodeRequest(real("read"));
    assert.equal(read.opcode, Opcode.READ);
    assert.equal(read.nodeid, FILE_NODE);
    // dd bs=4096 skip=5 count=1 with read-ahead off: exactly page 5
    assert.deepEqual(
      { offset: decodeRead(read).offset, size: decodeRead(read).size },
      { offset: 5 * 4096, size: 4096 },
    );
  });

  it("re-encodes real requests byte for byte from their fields", () => {
    for (const name of ["init", "lookup", "open", "read"]) {
      const bytes = real(name);
      const request = decodeRequest(bytes);
      const again = encodeRequest(request.opcode, request.unique, request.nodeid, request.body);
      // uid, gid and pid are not ours to keep: compare everything else
      assert.deepEqual(again.subarray(0, 24), bytes.subarray(0, 24), name);
      assert.deepEqual(again.subarray(IN_HEADER_BYTES), bytes.subarray(IN_HEADER_BYTES), name);
    }
  });

  it("refuses every truncation of a request, and bodies too short for their opcode", () => {
    const bytes = real("read");
    for (let cut = 0; cut < bytes.length; cut++) {
      assert.throws(() => decodeRequest(bytes.subarray(0, cut)), FuseWireError, `cut at ${cut}`);
    }
    for (let cut = 0; cut < 40; cut++) {
      const short = decodeRequest(
        encodeRequest(Opcode.READ, 1n, FILE_NODE, readBody(0, 4096).subarray(0, cut)),
      );
      assert.throws(() => decodeRead(short), FuseWireError, `READ body of ${cut}`);
    }
    for (let cut = 0; cut < 16; cut++) {
      const short = decodeRequest(encodeRequest(Opcode.INIT, 1n, 0n, initBody().subarray(0, cut)));
      assert.throws(() => decodeInit(short), FuseWireError, `INIT body of ${cut}`);
    }
    const unterminated = decodeRequest(encodeRequest(Opcode.LOOKUP, 1n, ROOT_NODE, Buffer.from("ram0.raw")));
    assert.throws(() => decodeLookupName(unterminated), FuseWireError);
  });

  it("writes NOTIFY_STORE as the kernel reads it, and reads it back", () => {
    const data = Buffer.from("page bytes");
    const message = Buffer.concat([encodeNotifyStoreHeader(FILE_NODE, 8192, data.length), data]);
    assert.equal(message.readUInt32LE(0), message.length);
    assert.equal(message.readInt32LE(4), 4, "FUSE_NOTIFY_STORE");
    assert.equal(message.readBigUInt64LE(8), 0n, "unique 0: a notification");
    assert.deepEqual(decodeNotifyStore(message), { nodeid: FILE_NODE, offset: 8192, data });
    for (let cut = 0; cut < message.length; cut++) {
      assert.throws(() => decodeNotifyStore(message.subarray(0, cut)), FuseWireError, `cut at ${cut}`);
    }
  });
});

describe("FUSE responder (one read-only file)", () => {
  it("answers INIT with our version, no read-ahead, async reads and the READ size", () => {
    const r = new FuseFileResponder(FILE, { maxReadahead: 0, maxPages: 16 }, () => Buffer.alloc(0));
    const reply = one(r.handle(real("init")));
    assert.equal(reply.error, 0);
    assert.equal(reply.body.length, 64);
    assert.equal(reply.body.readUInt32LE(0), 7);
    assert.equal(reply.body.readUInt32LE(4), 31);
    assert.equal(reply.body.readUInt32LE(8), 0, "max_readahead");
    assert.equal(reply.body.readUInt32LE(12), INIT_ASYNC_READ | INIT_MAX_PAGES);
    assert.equal(reply.body.readUInt16LE(28), 16, "max_pages");
    assert.throws(() => r.handle(encodeRequest(Opcode.INIT, 2n, 0n, initBody(8, 0))), FuseWireError);
  });

  it("asks for the request timeout when the kernel offers it (the real INIT does), not otherwise", () => {
    const offered = decodeInit(decodeRequest(real("init")));
    assert.ok((offered.flags & INIT_EXT) !== 0 && (offered.flags2 & INIT2_REQUEST_TIMEOUT) !== 0);
    const r = new FuseFileResponder(FILE, { maxReadahead: 0, maxPages: 16, requestTimeoutSec: 15 }, () =>
      Buffer.alloc(0),
    );
    const reply = one(r.handle(real("init")));
    assert.equal(reply.body.readUInt32LE(12), INIT_ASYNC_READ | INIT_MAX_PAGES | INIT_EXT);
    assert.equal(reply.body.readUInt32LE(32), INIT2_REQUEST_TIMEOUT, "flags2");
    assert.equal(reply.body.readUInt16LE(40), 15, "request_timeout");
    assert.equal(r.requestTimeoutSec, 15);
    // A kernel without flags2 (no INIT_EXT): nothing asked, flags2 and request_timeout zero.
    const old = new FuseFileResponder(FILE, { maxReadahead: 0, maxPages: 16, requestTimeoutSec: 15 }, () =>
      Buffer.alloc(0),
    );
    const plain = one(old.handle(encodeRequest(Opcode.INIT, 1n, 0n, initBody(7, 31))));
    assert.equal(plain.body.readUInt32LE(12), INIT_ASYNC_READ | INIT_MAX_PAGES);
    assert.equal(plain.body.readUInt32LE(32), 0);
    assert.equal(plain.body.readUInt16LE(40), 0);
    assert.equal(old.requestTimeoutSec, null);
  });

  it("refuses requests before INIT", () => {
    const r = new FuseFileResponder(FILE, { maxReadahead: 0, maxPages: 16 }, () => Buffer.alloc(0));
    assert.equal(one(r.handle(real("lookup"))).error, -Errno.EIO);
  });

  it("finds the one file by name, with its size; nothing else", () => {
    const r = responder();
    const entry = one(r.handle(real("lookup")));
    assert.equal(entry.error, 0);
    assert.equal(entry.body.readBigUInt64LE(0), FILE_NODE);
    assert.equal(Number(entry.body.readBigUInt64LE(40 + 8)), FILE.size);
    assert.equal(entry.body.readUInt32LE(40 + 60), 0o100600);
    const name = Buffer.from("other\0");
    assert.equal(one(r.handle(encodeRequest(Opcode.LOOKUP, 3n, ROOT_NODE, name))).error, -Errno.ENOENT);
    const attr = one(r.handle(encodeRequest(Opcode.GETATTR, 4n, ROOT_NODE, Buffer.alloc(16))));
    assert.equal(attr.body.readUInt32LE(16 + 60), 0o40500);
    assert.equal(one(r.handle(encodeRequest(Opcode.GETATTR, 5n, 9n, Buffer.alloc(16)))).error, -Errno.ENOENT);
  });

  it("serves READs from its reader, clamped at the end of the file, and logs them", () => {
    const r = responder();
    const reply = one(r.handle(encodeRequest(Opcode.READ, 7n, FILE_NODE, readBody(4096, 8192))));
    assert.equal(reply.unique, 7n);
    assert.deepEqual(reply.body, IMAGE.subarray(4096, 4096 + 8192));
    assert.deepEqual(r.lastRead, { offset: 4096, size: 8192 });
    const tail = one(r.handle(encodeRequest(Opcode.READ, 8n, FILE_NODE, readBody(10 * 4096, 4096))));
    assert.equal(tail.body.length, 100);
    const past = one(r.handle(encodeRequest(Opcode.READ, 9n, FILE_NODE, readBody(11 * 4096, 4096))));
    assert.equal(past.body.length, 0);
  });

  it("answers EIO for bytes its reader refuses (damage), and says why", () => {
    const r = responder(() => {
      throw new Error("chunk 0 checksum mismatch");
    });
    const reply = one(r.handle(encodeRequest(Opcode.READ, 7n, FILE_NODE, readBody(0, 4096))));
    assert.equal(reply.error, -Errno.EIO);
    assert.equal(reply.body.length, 0, "no bytes go out");
    assert.match(String(r.lastRead?.error), /checksum mismatch/);
  });

  it("refuses writes, answers nothing to FORGET and INTERRUPT, ENOSYS to the rest", () => {
    const r = responder();
    assert.equal(
      one(r.handle(encodeRequest(Opcode.WRITE, 10n, FILE_NODE, Buffer.alloc(80)))).error,
      -Errno.EROFS,
    );
    assert.equal(
      one(r.handle(encodeRequest(Opcode.SETATTR, 11n, FILE_NODE, Buffer.alloc(88)))).error,
      -Errno.EROFS,
    );
    assert.equal(r.handle(encodeRequest(Opcode.FORGET, 12n, FILE_NODE, Buffer.alloc(8))), undefined);
    assert.equal(r.handle(encodeRequest(Opcode.INTERRUPT, 13n, 0n, Buffer.alloc(8))), undefined);
    assert.equal(
      one(r.handle(encodeRequest(10 /* UNLINK */, 14n, ROOT_NODE, Buffer.from("x\0")))).error,
      -Errno.ENOSYS,
    );
    const open = one(r.handle(real("open")));
    assert.equal(open.error, 0);
    // keep the page cache, and no FLUSH on close: a process dying with the file open never waits on us
    assert.equal(open.body.readUInt32LE(8), 0b10_0010);
  });
});

describe("FUSE mounts in mountinfo", () => {
  it("finds our mounts (octal escapes undone) and nothing else", () => {
    const text = [
      "36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
      "41 30 0:52 / /run/hr/vms/a\\040b/ram-fuse rw,relatime - fuse hotrestore rw,user_id=0,group_id=0",
      "42 30 0:53 / /run/other rw,relatime - fuse sshfs rw,user_id=0,group_id=0",
      "43 30 0:54 / /run/hr/vms/c/ram-fuse rw,relatime shared:5 - fuse hotrestore rw",
      "",
    ].join("\n");
    assert.deepEqual(parseFuseMounts(text), ["/run/hr/vms/a b/ram-fuse", "/run/hr/vms/c/ram-fuse"]);
  });
});

describe("kernel paging: what is filled, in which order", () => {
  it("fills the working set's chunks first, in its order, then every chunk with data by address", () => {
    const withData = new Set([0, 1, 2, 5, 6, 7, 9]);
    const order = fillOrder([16 * 6 + 3, 16 * 6 + 4, 16 * 2, 16 * 3 + 1], 10, (c) => withData.has(c));
    assert.deepEqual(order, [
      { first: 6, count: 1 },
      { first: 2, count: 2 }, // chunks 2 and 3 are adjacent in the working set's order
      { first: 0, count: 2 },
      { first: 5, count: 1 },
      { first: 7, count: 1 },
      { first: 9, count: 1 },
    ]);
  });

  it("never lists a chunk twice, and bounds a range's length", () => {
    const order = fillOrder([], 40, () => true);
    const chunks = order.flatMap((range) => Array.from({ length: range.count }, (_, i) => range.first + i));
    assert.deepEqual(
      chunks,
      Array.from({ length: 40 }, (_, i) => i),
    );
    assert.ok(
      order.every((range) => range.count <= 4),
      JSON.stringify(order),
    );
  });

  it("coalesces W0's pages into runs of adjacent pages", () => {
    assert.deepEqual(pageRuns([9, 3, 4, 5, 9, 11]), [
      { first: 3, count: 3 },
      { first: 9, count: 1 },
      { first: 11, count: 1 },
    ]);
    assert.deepEqual(pageRuns([]), []);
  });
});

describe("FUSE connection of a mount", () => {
  it("is the minor of the mount's device, found by mount point", () => {
    const text = [
      "41 30 0:52 / /run/hr/vms/a\\040b/ram-fuse rw,relatime - fuse hotrestore rw,user_id=0",
      "43 30 0:54 / /run/hr/vms/c/ram-fuse rw,relatime shared:5 - fuse hotrestore rw",
      "44 30 0:55 / /run/hr/vms/d rw,relatime - ext4 /dev/vda rw",
    ].join("\n");
    assert.equal(connectionOf(text, "/run/hr/vms/a b/ram-fuse"), 52);
    assert.equal(connectionOf(text, "/run/hr/vms/c/ram-fuse"), 54);
    assert.equal(connectionOf(text, "/run/hr/vms/d"), undefined, "not a FUSE mount");
    assert.equal(connectionOf(text, "/elsewhere"), undefined);
  });
});
