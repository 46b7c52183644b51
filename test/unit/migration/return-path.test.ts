import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  ReturnPathDecoder,
  encodeReturnPathMessage,
  type ReturnPathMessage,
} from "../../../src/migration/return-path.ts";
import { isHrError } from "../../../src/util/errors.ts";
import { prng } from "./fixtures.ts";

const MESSAGES: ReturnPathMessage[] = [
  { type: "pong", value: 1 },
  { type: "reqPages", block: "pc.ram", start: 0x2bc6000, length: 4096, withId: true },
  { type: "reqPages", block: "pc.ram", start: 0x2bc7000, length: 8192, withId: false },
  { type: "pong", value: 0xffffffff },
  { type: "reqPages", block: "0000:00:02.0/vga.vram", start: 2 ** 40, length: 4096, withId: true },
  { type: "reqPages", block: "0000:00:02.0/vga.vram", start: 4096, length: 4096, withId: false },
  { type: "resumeAck", value: 1 },
  { type: "shut", error: 0 },
];
const STREAM = Buffer.concat(MESSAGES.map(encodeReturnPathMessage));

function decode(chunks: Buffer[]): ReturnPathMessage[] {
  const decoder = new ReturnPathDecoder();
  const out = chunks.flatMap((chunk) => decoder.push(chunk));
  assert.equal(decoder.buffered, 0);
  return out;
}

function decodeError(bytes: Buffer): string {
  try {
    decode([bytes]);
    return "ok";
  } catch (error) {
    assert.ok(isHrError(error), String(error));
    return error.code;
  }
}

void describe("return path", () => {
  void it("encodes as QEMU 7.2 does (bytes captured from a real destination)", () => {
    assert.equal(encodeReturnPathMessage({ type: "pong", value: 1 }).toString("hex"), "0002000400000001");
    assert.equal(
      encodeReturnPathMessage(MESSAGES[1]!).toString("hex"),
      "000300130000000002bc60000000100006" + Buffer.from("pc.ram").toString("hex"),
    );
    assert.equal(encodeReturnPathMessage(MESSAGES[2]!).toString("hex"), "0004000c0000000002bc700000002000");
    assert.equal(encodeReturnPathMessage({ type: "shut", error: 0 }).toString("hex"), "0001000400000000");
  });

  void it("decodes what it encodes, split at every byte boundary", () => {
    assert.deepEqual(decode([STREAM]), MESSAGES);
    for (let at = 0; at <= STREAM.length; at += 1) {
      assert.deepEqual(decode([STREAM.subarray(0, at), STREAM.subarray(at)]), MESSAGES, `split at ${at}`);
    }
    const bytes = [...STREAM].map((byte) => Buffer.from([byte]));
    assert.deepEqual(decode(bytes), MESSAGES);
  });

  void it("refuses unknown types, wrong lengths, REQ_PAGES before REQ_PAGES_ID, RECV_BITMAP", () => {
    assert.equal(decodeError(Buffer.from("0009000400000000", "hex")), "MIGRATION_BAD_STREAM");
    assert.equal(decodeError(Buffer.from("00020003000000", "hex")), "MIGRATION_BAD_STREAM");
    assert.equal(decodeError(encodeReturnPathMessage(MESSAGES[2]!)), "MIGRATION_BAD_STREAM");
    assert.equal(decodeError(Buffer.from("000500020170", "hex")), "MIGRATION_UNSUPPORTED");
    const badId = Buffer.from(encodeReturnPathMessage(MESSAGES[1]!));
    badId[16] = 9;
    assert.equal(decodeError(badId), "MIGRATION_BAD_STREAM");
  });

  void it("throws only HrError on random garbage, and keeps failing after an error", () => {
    const random = prng(11);
    for (let round = 0; round < 500; round += 1) {
      const garbage = Buffer.alloc(Math.floor(random() * 64));
      for (let i = 0; i < garbage.length; i += 1) garbage[i] = Math.floor(random() * 256);
      const decoder = new ReturnPathDecoder();
      try {
        decoder.push(garbage);
      } catch (error) {
        assert.ok(isHrError(error), String(error));
        assert.throws(
          () => decoder.push(STREAM),
          (again: unknown) => again === error,
        );
      }
    }
  });
});
