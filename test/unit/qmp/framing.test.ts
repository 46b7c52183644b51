import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isHrError } from "../../../src/util/errors.ts";
import {
  encodeCommand,
  encodeMessage,
  LineDecoder,
  parseServerMessage,
  QmpDecoder,
} from "../../../src/qmp/framing.ts";
import type { QmpServerMessage } from "../../../src/qmp/types.ts";

// Bytes as QEMU 7.2.22 (Debian) wrote them, plus a reply carrying 2-, 3- and 4-byte UTF-8 characters.
const TRANSCRIPT = [
  '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}\r\n',
  '{"return": {}, "id": 1}\r\n',
  '{"return": {"status": "prelaunch", "singlestep": false, "running": false}, "id": 2}\r\n',
  '{"timestamp": {"seconds": 1795649096, "microseconds": 571326}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}\r\n',
  '{"id": 5, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}\r\n',
  '{"return": "café ✓ 🚀\\r\\n", "id": 6}\r\n',
].join("");

const EXPECTED: QmpServerMessage[] = [
  {
    kind: "greeting",
    greeting: {
      QMP: {
        version: { qemu: { micro: 22, minor: 2, major: 7 }, package: "Debian 1:7.2+dfsg-7+deb12u18+b3" },
        capabilities: ["oob"],
      },
    },
  },
  { kind: "return", id: 1, value: {} },
  { kind: "return", id: 2, value: { status: "prelaunch", singlestep: false, running: false } },
  {
    kind: "event",
    event: {
      event: "SHUTDOWN",
      data: { guest: false, reason: "host-qmp-quit" },
      timestamp: { seconds: 1795649096, microseconds: 571326 },
    },
  },
  { kind: "error", id: 5, error: { class: "CommandNotFound", desc: "The command nope has not been found" } },
  { kind: "return", id: 6, value: "café ✓ 🚀\r\n" },
];

function decodeChunks(chunks: Buffer[], maxBytes?: number): QmpServerMessage[] {
  const decoder = new QmpDecoder(maxBytes);
  const messages: QmpServerMessage[] = [];
  for (const chunk of chunks) decoder.push(chunk, (message) => messages.push(message));
  return messages;
}

function linesOf(chunks: Buffer[], maxBytes: number): string[] {
  const decoder = new LineDecoder(maxBytes);
  const lines: string[] = [];
  for (const chunk of chunks) decoder.push(chunk, (line) => lines.push(line));
  return lines;
}

function splitAt(bytes: Buffer, at: number): Buffer[] {
  return [bytes.subarray(0, at), bytes.subarray(at)];
}

function byteByByte(bytes: Buffer): Buffer[] {
  return [...bytes].map((byte) => Buffer.from([byte]));
}

void describe("QMP framing", () => {
  const bytes = Buffer.from(TRANSCRIPT, "utf8");

  void it("decodes a realistic transcript in one chunk", () => {
    assert.deepEqual(decodeChunks([bytes]), EXPECTED);
  });

  void it("decodes the transcript split in two at every byte", () => {
    for (let at = 0; at <= bytes.length; at++) {
      assert.deepEqual(decodeChunks(splitAt(bytes, at)), EXPECTED, `split at ${at}`);
    }
  });

  void it("decodes the transcript fed one byte at a time (splits inside UTF-8 and CRLF)", () => {
    assert.deepEqual(decodeChunks(byteByByte(bytes)), EXPECTED);
  });

  void it("accepts bare LF line ends and skips blank lines", () => {
    const text = '\r\n{"return": {}, "id": 1}\n\n  \r\n{"return": 2, "id": 2}\r\n';
    const values = decodeChunks([Buffer.from(text)]).map((m) => (m.kind === "return" ? m.value : m.kind));
    assert.deepEqual(values, [{}, 2]);
  });

  void it("keeps an unfinished line buffered until its LF arrives", () => {
    const decoder = new LineDecoder(1024);
    const lines: string[] = [];
    decoder.push(Buffer.from('{"return": {}, "id": 1}\r'), (line) => lines.push(line));
    assert.equal(lines.length, 0);
    assert.equal(decoder.bufferedBytes, 24);
    decoder.push(Buffer.from("\n"), (line) => lines.push(line));
    assert.deepEqual(lines, ['{"return": {}, "id": 1}']);
    assert.equal(decoder.bufferedBytes, 0);
  });

  void describe("size limit", () => {
    const max = 64;
    const fits = Buffer.from(`${"a".repeat(max)}\r\n${"b".repeat(max)}\n`);
    const tooBig = Buffer.from(`ok\r\n${"c".repeat(max + 1)}\r\n`);

    void it("accepts lines of exactly the limit at every split", () => {
      for (let at = 0; at <= fits.length; at++) {
        assert.deepEqual(linesOf(splitAt(fits, at), max), ["a".repeat(max), "b".repeat(max)], `at ${at}`);
      }
    });

    void it("rejects a line one byte over the limit at every split, after the lines before it", () => {
      for (let at = 0; at <= tooBig.length; at++) {
        const decoder = new LineDecoder(max);
        const lines: string[] = [];
        assert.throws(
          () => splitAt(tooBig, at).forEach((chunk) => decoder.push(chunk, (line) => lines.push(line))),
          (error) => isHrError(error, "QMP_PROTOCOL"),
          `at ${at}`,
        );
        assert.deepEqual(lines, ["ok"]);
        assert.equal(decoder.state, "failed");
      }
    });

    void it("rejects an endless line before its end arrives and stays failed", () => {
      const decoder = new LineDecoder(max);
      const noop = (): void => undefined;
      decoder.push(Buffer.alloc(max, 0x61), noop);
      assert.throws(
        () => decoder.push(Buffer.alloc(2, 0x61), noop),
        (e) => isHrError(e, "QMP_PROTOCOL"),
      );
      assert.equal(decoder.bufferedBytes, 0);
      assert.throws(
        () => decoder.push(Buffer.from("\n"), noop),
        (e) => isHrError(e, "QMP_PROTOCOL"),
      );
    });

    void it("QmpDecoder applies the limit too", () => {
      const line = Buffer.from(`{"return": "${"x".repeat(100)}", "id": 1}\r\n`);
      assert.throws(
        () => decodeChunks([line], 64),
        (e) => isHrError(e, "QMP_PROTOCOL"),
      );
    });
  });

  void describe("envelope parsing", () => {
    const bad = [
      ["invalid JSON", '{"return": '],
      ["not an object", "[1, 2]"],
      ["unknown shape", '{"hello": 1}'],
      ["error without desc", '{"error": {"class": "GenericError"}, "id": 1}'],
      ["event without timestamp", '{"event": "STOP"}'],
      ["greeting without version", '{"QMP": {"capabilities": []}}'],
    ];
    for (const [name, line] of bad) {
      void it(`rejects ${name} with QMP_PROTOCOL`, () => {
        assert.throws(
          () => parseServerMessage(line!),
          (e) => isHrError(e, "QMP_PROTOCOL"),
        );
      });
    }

    void it("fails for good once a message is bad", () => {
      const decoder = new QmpDecoder();
      const noop = (): void => undefined;
      assert.throws(
        () => decoder.push(Buffer.from("nope\r\n"), noop),
        (e) => isHrError(e, "QMP_PROTOCOL"),
      );
      const good = Buffer.from('{"return": {}, "id": 1}\r\n');
      assert.throws(
        () => decoder.push(good, noop),
        (e) => isHrError(e, "QMP_PROTOCOL"),
      );
    });

    void it("keeps an event without data as data undefined, and a reply without id as id undefined", () => {
      const stop = parseServerMessage('{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}');
      assert.deepEqual(stop, {
        kind: "event",
        event: { event: "STOP", data: undefined, timestamp: { seconds: 1, microseconds: 2 } },
      });
      const error = parseServerMessage('{"error": {"class": "GenericError", "desc": "JSON parse error"}}');
      assert.deepEqual(error, {
        kind: "error",
        id: undefined,
        error: { class: "GenericError", desc: "JSON parse error" },
      });
    });
  });

  void describe("encoder", () => {
    void it("writes one CRLF-terminated line per command and omits absent arguments", () => {
      assert.equal(encodeCommand({ execute: "stop", id: 3 }).toString(), '{"execute":"stop","id":3}\r\n');
      const withArgs = encodeCommand({
        execute: "qom-get",
        arguments: { path: "/machine", property: "type" },
        id: 4,
      });
      assert.equal(
        withArgs.toString(),
        '{"execute":"qom-get","arguments":{"path":"/machine","property":"type"},"id":4}\r\n',
      );
    });

    void it("round-trips server messages through the decoder at every split", () => {
      const wire = Buffer.concat([
        encodeMessage({
          QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: "" }, capabilities: [] },
        }),
        encodeMessage({ return: { text: "line1\nline2 ✓" }, id: 1 }),
        encodeMessage({ event: "STOP", timestamp: { seconds: 5, microseconds: 6 } }),
      ]);
      const once = decodeChunks([wire]);
      assert.equal(once.length, 3);
      assert.deepEqual(once[1], { kind: "return", id: 1, value: { text: "line1\nline2 ✓" } });
      for (let at = 0; at <= wire.length; at++) assert.deepEqual(decodeChunks(splitAt(wire, at)), once);
    });

    void it("rejects values JSON cannot hold with QMP_ENCODE", () => {
      assert.throws(
        () => encodeCommand({ execute: "x", arguments: { n: 1n }, id: 1 }),
        (e) => isHrError(e, "QMP_ENCODE"),
      );
    });
  });
});
