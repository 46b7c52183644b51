import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { PcapFileWriter } from "../../../src/net/pcap-file.ts";
import {
  encodePcapHeader,
  encodePcapRecord,
  LINKTYPE_ETHERNET,
  parsePcap,
  PcapDecoder,
  type PcapRecord,
} from "../../../src/net/pcap.ts";
import { isHrError } from "../../../src/util/errors.ts";

const dirs: string[] = [];

after(async () => {
  await Promise.all(dirs.map((dir) => rm(dir, { recursive: true, force: true })));
});

const FRAMES = [Buffer.alloc(60, 1), Buffer.alloc(1514, 2), Buffer.alloc(14, 3)];
const TIMES = [1700000000123.456, 1700000000124, 0];

function file(): Buffer {
  return Buffer.concat([
    encodePcapHeader(),
    ...FRAMES.map((frame, i) => encodePcapRecord(frame, TIMES[i] ?? 0)),
  ]);
}

function assertRecords(records: PcapRecord[]): void {
  assert.equal(records.length, FRAMES.length);
  records.forEach((record, i) => {
    assert.deepEqual(record.data, FRAMES[i]);
    assert.equal(record.originalLength, FRAMES[i]?.length);
    assert.ok(Math.abs(record.timeMs - (TIMES[i] ?? 0)) < 0.0011, `time ${record.timeMs}`);
  });
}

describe("pcap format", () => {
  it("writes the classic little-endian microsecond header", () => {
    const expected = ["d4c3b2a1", "0200", "0400", "00000000", "00000000", "00000400", "01000000"].join("");
    assert.equal(encodePcapHeader().toString("hex"), expected);
  });

  it("round-trips records", () => {
    const { header, records } = parsePcap(file());
    assert.equal(header.linktype, LINKTYPE_ETHERNET);
    assert.equal(header.nanoseconds, false);
    assertRecords(records);
  });

  it("reads the same records whatever byte boundary the file is split at", () => {
    const whole = file();
    for (let split = 0; split <= whole.length; split++) {
      const decoder = new PcapDecoder();
      const records = [...decoder.push(whole.subarray(0, split)), ...decoder.push(whole.subarray(split))];
      assertRecords(records);
    }
  });

  it("reads big-endian nanosecond files too", () => {
    const header = Buffer.from(
      ["a1b23c4d", "0002", "0004", "00000000", "00000000", "00040000", "00000001"].join(""),
      "hex",
    );
    const record = Buffer.alloc(16 + 2);
    record.writeUInt32BE(10, 0);
    record.writeUInt32BE(500_000, 4);
    record.writeUInt32BE(2, 8);
    record.writeUInt32BE(2, 12);
    const { header: parsed, records } = parsePcap(Buffer.concat([header, record]));
    assert.equal(parsed.littleEndian, false);
    assert.equal(parsed.nanoseconds, true);
    assert.equal(records[0]?.timeMs, 10000.5);
  });

  it("rejects a bad magic and a truncated file", () => {
    assert.throws(
      () => parsePcap(Buffer.alloc(24)),
      (error) => isHrError(error, "PCAP_INVALID"),
    );
    assert.throws(
      () => parsePcap(file().subarray(0, 50)),
      (error) => isHrError(error, "PCAP_INVALID"),
    );
  });

  it("PcapFileWriter writes a file the reader accepts", async () => {
    const dir = await mkdtemp(join(tmpdir(), "hr-pcap-"));
    dirs.push(dir);
    const path = join(dir, "x.pcap");
    const writer = await PcapFileWriter.open(path);
    FRAMES.forEach((frame, i) => writer.write(frame, TIMES[i] ?? 0));
    await writer.close();
    assert.equal(writer.frames, 3);
    assertRecords(parsePcap(await readFile(path)).records);
  });

  it("PcapFileWriter reports a directory that does not exist", async () => {
    await assert.rejects(PcapFileWriter.open("/nonexistent-dir/x.pcap"), (error) =>
      isHrError(error, "PCAP_OPEN_FAILED"),
    );
  });
});
