/**
 * Fuzz target of the QMP reader (src/qmp/framing.ts): QmpDecoder, line framing plus envelope
 * parsing, fed a mutated QEMU 7.2 transcript, QMP-shaped JSON lines with random members, any JSON,
 * and random text, whole and in chunks (which must give the same messages), under the default
 * line limit and under small ones.
 */
import fc from "fast-check";
import { QmpDecoder } from "../../src/qmp/framing.ts";
import type { QmpServerMessage } from "../../src/qmp/types.ts";
import { check, defineTarget, OK, typedOutcome, type FuzzTarget, type Outcome } from "./harness.ts";
import { chunked, chunksOf, fuzzBytes, type Chunked, type Seed } from "./mutate.ts";

// Bytes as QEMU 7.2.22 (Debian) wrote them, plus a reply carrying 2-, 3- and 4-byte UTF-8 characters.
const TRANSCRIPT = [
  '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}\r\n',
  '{"return": {}, "id": 1}\r\n',
  '{"return": {"status": "prelaunch", "singlestep": false, "running": false}, "id": 2}\r\n',
  '{"timestamp": {"seconds": 1795649096, "microseconds": 571326}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}\r\n',
  '{"id": 5, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}\r\n',
  '{"return": "café ✓ 🚀\\r\\n", "id": 6}\r\n',
];

const SEEDS: Seed[] = [
  { bytes: Buffer.from(TRANSCRIPT.join(""), "utf8"), fields: [] },
  ...TRANSCRIPT.map((line) => ({ bytes: Buffer.from(line, "utf8"), fields: [] })),
];

const anyJson = fc.jsonValue({ maxDepth: 3 });

/** Objects with the members the decoder looks at, holding values of any type. */
const qmpShaped = fc.oneof(
  fc.record({ QMP: fc.oneof(anyJson, fc.record({ version: anyJson, capabilities: anyJson })) }),
  fc.record({
    QMP: fc.record({
      version: fc.record({ qemu: fc.record({ major: anyJson, minor: anyJson, micro: anyJson }) }),
      capabilities: fc.array(fc.string()),
    }),
  }),
  fc.record(
    {
      event: anyJson,
      timestamp: fc.oneof(anyJson, fc.record({ seconds: anyJson, microseconds: anyJson })),
      data: anyJson,
    },
    { requiredKeys: ["event"] },
  ),
  fc.record(
    { id: anyJson, error: fc.oneof(anyJson, fc.record({ class: anyJson, desc: anyJson })) },
    { requiredKeys: ["error"] },
  ),
  fc.record({ id: anyJson, return: anyJson }, { requiredKeys: ["return"] }),
);

const lines: fc.Arbitrary<Buffer> = fc
  .array(
    fc.oneof(
      qmpShaped.map((value) => JSON.stringify(value)),
      anyJson.map((value) => JSON.stringify(value)),
      fc.string({ unit: "grapheme", maxLength: 40 }),
      fc.constantFrom("", "\r", " ", "{", "[]", "null", '{"__proto__": {"return": 1}}'),
    ),
    { maxLength: 6 },
  )
  .chain((texts) =>
    fc
      .array(fc.constantFrom("\r\n", "\n", "\r", "\n\n", ""), {
        minLength: texts.length,
        maxLength: texts.length,
      })
      .map((ends) => Buffer.from(texts.map((text, i) => `${text}${ends[i]!}`).join(""), "utf8")),
  );

function decode(
  chunks: readonly Buffer[],
  maxMessageBytes: number | undefined,
): { outcome: Outcome; messages: QmpServerMessage[] } {
  const decoder = new QmpDecoder(maxMessageBytes);
  const messages: QmpServerMessage[] = [];
  try {
    for (const chunk of chunks) decoder.push(chunk, (message) => messages.push(message));
    return { outcome: OK, messages };
  } catch (error) {
    return { outcome: typedOutcome(error, { codes: ["QMP_PROTOCOL"] }), messages };
  }
}

export const QMP_TARGETS: FuzzTarget[] = [
  defineTarget({
    name: "qmp-decoder",
    about:
      "QmpDecoder: mutated QEMU transcript, QMP-shaped and arbitrary JSON lines, random text; whole and in chunks (same messages)",
    arbitrary: fc.record({
      stream: chunked(
        fc.oneof({ weight: 3, arbitrary: fuzzBytes(SEEDS, 256) }, { weight: 2, arbitrary: lines }),
      ),
      maxMessageBytes: fc.constantFrom(undefined, 1, 16, 64, 200),
    }),
    run: ({ stream, maxMessageBytes }: { stream: Chunked; maxMessageBytes: number | undefined }) => {
      const whole = decode([stream.bytes], maxMessageBytes);
      const split = decode(chunksOf(stream), maxMessageBytes);
      check(whole.outcome === split.outcome, `whole input gave ${whole.outcome}, in chunks ${split.outcome}`);
      check(
        JSON.stringify(whole.messages) === JSON.stringify(split.messages),
        "chunking changed the messages",
      );
      return whole.outcome;
    },
  }),
];
