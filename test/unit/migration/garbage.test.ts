import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { encodeCommand } from "../../../src/migration/commands.ts";
import { shortString } from "../../../src/migration/configuration.ts";
import { encodeEof, encodeFooter, encodeHeader, encodeRamStart, u64 } from "../../../src/migration/encode.ts";
import { Limits, RamFlag, Section } from "../../../src/migration/format.ts";
import { MigrationStreamReader } from "../../../src/migration/reader.ts";
import { isHrError } from "../../../src/util/errors.ts";
import { BLOCKS, CONFIGURATION, RAM_SECTION_ID, buildStream, pageData, prng, readAll } from "./fixtures.ts";

const TINY = buildStream({
  pages: [
    { block: "pc.ram", offset: 0, data: pageData(1) },
    { block: "pc.ram", offset: 4096, zero: true },
  ],
});
const START = encodeRamStart({ sectionId: RAM_SECTION_ID, blocks: BLOCKS });

/** Runs the reader over chunks; returns the HrError code, "ok", or fails on any other exception. */
function outcome(chunks: Buffer[]): string {
  try {
    readAll(chunks);
    return "ok";
  } catch (error) {
    assert.ok(isHrError(error), `not an HrError: ${String(error)}`);
    assert.match(error.code, /^MIGRATION_/);
    return error.code;
  }
}

/** A stream up to the ram START, then one PART holding `records`. */
function withPart(...records: Buffer[]): Buffer {
  const head = Buffer.from([Section.PART, 0, 0, 0, RAM_SECTION_ID]);
  return Buffer.concat([encodeHeader(), CONFIGURATION, START, head, ...records]);
}

function expectCode(bytes: Buffer, code: string, message?: RegExp): void {
  assert.throws(
    () => readAll([bytes]),
    (error: unknown) => isHrError(error, code) && (message === undefined || message.test(error.message)),
  );
}

void describe("MigrationStreamReader on damaged input", () => {
  void it("reports every truncation as an HrError (complete only at the end or just after EOF)", () => {
    const eofAt = TINY.length - (TINY.length - TINY.lastIndexOf(Buffer.from([0, Section.VMDESCRIPTION])) - 1);
    for (let cut = 0; cut < TINY.length; cut += 1) {
      const result = outcome([TINY.subarray(0, cut)]);
      if (cut === eofAt) assert.equal(result, "ok", "a stream may end right after EOF (no VMDESCRIPTION)");
      else assert.notEqual(result, "ok", `cut at ${cut}`);
    }
    assert.equal(outcome([TINY]), "ok");
  });

  void it("never throws anything but HrError for any single corrupted byte, and never hangs", () => {
    const random = prng(42);
    const started = Date.now();
    for (let at = 0; at < TINY.length; at += 1) {
      const bad = Buffer.from(TINY);
      bad[at] = (bad[at]! + 1 + Math.floor(random() * 255)) & 0xff;
      outcome([bad]);
      outcome([bad.subarray(0, at + 1), bad.subarray(at + 1)]);
    }
    assert.ok(Date.now() - started < 60_000);
  });

  void it("never throws anything but HrError for random garbage after a valid header", () => {
    const random = prng(7);
    for (let round = 0; round < 300; round += 1) {
      const garbage = Buffer.alloc(1 + Math.floor(random() * 300));
      for (let i = 0; i < garbage.length; i += 1) garbage[i] = Math.floor(random() * 256);
      outcome([encodeHeader(), garbage]);
      outcome([encodeHeader(), CONFIGURATION, START, garbage]);
    }
  });

  void it("refuses bad magic and version at once, naming the byte", () => {
    const reader = new MigrationStreamReader();
    assert.throws(() => reader.push(Buffer.from("QX")), { code: "MIGRATION_BAD_STREAM", message: /byte 1/ });
    assert.throws(() => reader.push(Buffer.from("QEVM")), { code: "MIGRATION_BAD_STREAM" }, "errors stick");
    expectCode(Buffer.from("5145564d00000002", "hex"), "MIGRATION_BAD_STREAM", /version 2/);
  });

  void it("refuses XBZRLE, compressed, multifd and RDMA records naming the capability", () => {
    const id = shortString("pc.ram");
    expectCode(withPart(u64(RamFlag.XBZRLE), id), "MIGRATION_UNSUPPORTED", /XBZRLE/);
    expectCode(withPart(u64(RamFlag.COMPRESS_PAGE), id), "MIGRATION_UNSUPPORTED", /compress/);
    expectCode(withPart(u64(RamFlag.MULTIFD_FLUSH)), "MIGRATION_UNSUPPORTED", /MULTIFD/);
    expectCode(withPart(u64(RamFlag.HOOK)), "MIGRATION_UNSUPPORTED", /RDMA/);
    expectCode(withPart(u64(RamFlag.FULL)), "MIGRATION_BAD_STREAM", /obsolete/);
    try {
      readAll([withPart(u64(RamFlag.XBZRLE), id)]);
    } catch (error) {
      assert.ok(isHrError(error) && /xbzrle/.test(error.hint ?? ""));
    }
  });

  void it("refuses iterative sections other than ram", () => {
    const name = shortString("block");
    const head = Buffer.concat([Buffer.from([Section.START, 0, 0, 0, 9]), name, Buffer.alloc(8)]);
    expectCode(Buffer.concat([encodeHeader(), CONFIGURATION, head]), "MIGRATION_UNSUPPORTED", /"block"/);
  });

  void it("refuses pages of unknown blocks, beyond their block, or CONTINUE with no block", () => {
    const data = pageData(3);
    expectCode(
      withPart(u64(RamFlag.PAGE), shortString("nope"), data),
      "MIGRATION_BAD_STREAM",
      /unknown RAM block/,
    );
    expectCode(
      withPart(u64(16 * 4096 + RamFlag.PAGE), shortString("pc.ram"), data),
      "MIGRATION_BAD_STREAM",
      /beyond/,
    );
    expectCode(
      withPart(u64(RamFlag.ZERO | RamFlag.CONTINUE), Buffer.from([0])),
      "MIGRATION_BAD_STREAM",
      /CONTINUE/,
    );
  });

  void it("refuses a missing footer, unknown section types and commands, trailing bytes", () => {
    expectCode(withPart(u64(RamFlag.EOS), encodeFooter(99)), "MIGRATION_BAD_STREAM", /footer/);
    expectCode(
      Buffer.concat([encodeHeader(), CONFIGURATION, Buffer.from([0x42])]),
      "MIGRATION_BAD_STREAM",
      /0x42/,
    );
    expectCode(Buffer.concat([encodeHeader(), encodeCommand(77)]), "MIGRATION_BAD_STREAM", /command 77/);
    expectCode(
      Buffer.concat([encodeHeader(), encodeEof(), Buffer.from([1])]),
      "MIGRATION_BAD_STREAM",
      /after EOF/,
    );
    expectCode(Buffer.concat([TINY, Buffer.from([0])]), "MIGRATION_TRUNCATED");
  });

  void it("checks sizes before allocating: vmdesc, PACKAGED, block count, machine name", () => {
    const vmdesc = Buffer.from([Section.VMDESCRIPTION, 0, 0, 0, 0]);
    vmdesc.writeUInt32BE(Limits.vmdescBytes + 1, 1);
    expectCode(Buffer.concat([encodeHeader(), encodeEof(), vmdesc]), "MIGRATION_TOO_LARGE", /VMDESCRIPTION/);
    const packaged = Buffer.alloc(4);
    packaged.writeUInt32BE(Limits.packagedBytes + 1, 0);
    expectCode(
      Buffer.concat([encodeHeader(), encodeCommand(7, packaged)]),
      "MIGRATION_TOO_LARGE",
      /PACKAGED/,
    );
    const config = Buffer.from([Section.CONFIGURATION, 0xff, 0xff, 0xff, 0xff]);
    expectCode(Buffer.concat([encodeHeader(), config]), "MIGRATION_TOO_LARGE", /machine name/);
    const blocks = Array.from({ length: Limits.ramBlocks + 1 }, (_, i) => ({
      id: `b${i}`,
      usedLength: 4096,
    }));
    const many = Buffer.concat([u64(blocks.length * 4096 + RamFlag.MEM_SIZE)]);
    const list = blocks.flatMap((block) => [shortString(block.id), u64(block.usedLength)]);
    const head = Buffer.concat([
      Buffer.from([Section.START, 0, 0, 0, 2]),
      shortString("ram"),
      Buffer.from([0, 0, 0, 0, 0, 0, 0, 4]),
    ]);
    expectCode(Buffer.concat([encodeHeader(), head, many, ...list]), "MIGRATION_TOO_LARGE", /block list/);
  });
});
