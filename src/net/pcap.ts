import { HrError } from "../util/errors.ts";
import { ByteQueue } from "../util/byte-queue.ts";

/**
 * Classic libpcap file format (what tcpdump -w writes), Ethernet link type.
 *
 * Global header, 24 bytes, in the writer's byte order (we write little-endian, microseconds):
 *
 *   offset  size  field
 *   0       4     magic: 0xa1b2c3d4 (microsecond timestamps) or 0xa1b23c4d (nanoseconds);
 *                 read back as 0xd4c3b2a1 / 0x4d3cb2a1 when the file is in the other byte order
 *   4       2     major version (2)
 *   6       2     minor version (4)
 *   8       4     this zone (0)
 *   12      4     sigfigs (0)
 *   16      4     snapshot length (largest record kept)
 *   20      4     link type (1 = LINKTYPE_ETHERNET)
 *
 * Then records, each a 16-byte header and the captured bytes:
 *
 *   0       4     timestamp seconds
 *   4       4     timestamp microseconds (or nanoseconds, per the magic)
 *   8       4     captured length N
 *   12      4     original length
 *   16      N     frame
 *
 * Versioning: readers accept major 2 only (minor is informational, as in libpcap).
 * Decoder states: GLOBAL_HEADER -> RECORD_HEADER <-> RECORD_DATA; a bad magic, version or a
 * captured length above MAX_RECORD_LENGTH throws PCAP_INVALID before anything is allocated.
 */
export const MAGIC_OFFSET = 0;
export const VERSION_MAJOR_OFFSET = 4;
export const VERSION_MINOR_OFFSET = 6;
export const THISZONE_OFFSET = 8;
export const SIGFIGS_OFFSET = 12;
export const SNAPLEN_OFFSET = 16;
export const LINKTYPE_OFFSET = 20;
export const GLOBAL_HEADER_LENGTH = 24;

export const TS_SEC_OFFSET = 0;
export const TS_FRACTION_OFFSET = 4;
export const INCL_LEN_OFFSET = 8;
export const ORIG_LEN_OFFSET = 12;
export const RECORD_HEADER_LENGTH = 16;

export const MAGIC_MICROSECONDS = 0xa1b2c3d4;
export const MAGIC_NANOSECONDS = 0xa1b23c4d;
export const LINKTYPE_ETHERNET = 1;
export const DEFAULT_SNAPLEN = 262144;
export const MAX_RECORD_LENGTH = 262144;

export interface PcapHeader {
  versionMajor: number;
  versionMinor: number;
  snaplen: number;
  linktype: number;
  nanoseconds: boolean;
  littleEndian: boolean;
}

export interface PcapRecord {
  /** Milliseconds since the epoch, with the file's sub-millisecond precision. */
  timeMs: number;
  originalLength: number;
  data: Buffer;
}

export function encodePcapHeader(snaplen = DEFAULT_SNAPLEN, linktype = LINKTYPE_ETHERNET): Buffer {
  const header = Buffer.alloc(GLOBAL_HEADER_LENGTH);
  header.writeUInt32LE(MAGIC_MICROSECONDS, MAGIC_OFFSET);
  header.writeUInt16LE(2, VERSION_MAJOR_OFFSET);
  header.writeUInt16LE(4, VERSION_MINOR_OFFSET);
  header.writeInt32LE(0, THISZONE_OFFSET);
  header.writeUInt32LE(0, SIGFIGS_OFFSET);
  header.writeUInt32LE(snaplen, SNAPLEN_OFFSET);
  header.writeUInt32LE(linktype, LINKTYPE_OFFSET);
  return header;
}

/** One record (header + frame, truncated to `snaplen`), microsecond timestamp. */
export function encodePcapRecord(frame: Buffer, timeMs: number, snaplen = DEFAULT_SNAPLEN): Buffer {
  const captured = Math.min(frame.length, snaplen);
  const totalMicros = Math.max(0, Math.round(timeMs * 1000));
  const record = Buffer.allocUnsafe(RECORD_HEADER_LENGTH + captured);
  record.writeUInt32LE(Math.floor(totalMicros / 1e6) >>> 0, TS_SEC_OFFSET);
  record.writeUInt32LE(totalMicros % 1e6, TS_FRACTION_OFFSET);
  record.writeUInt32LE(captured, INCL_LEN_OFFSET);
  record.writeUInt32LE(frame.length, ORIG_LEN_OFFSET);
  frame.copy(record, RECORD_HEADER_LENGTH, 0, captured);
  return record;
}

type DecoderState = "GLOBAL_HEADER" | "RECORD_HEADER" | "RECORD_DATA";

/** Streaming pcap reader: push chunks, get whole records. Throws HrError PCAP_INVALID. */
export class PcapDecoder {
  readonly #queue = new ByteQueue();
  #state: DecoderState = "GLOBAL_HEADER";
  #header: PcapHeader | undefined;
  #recordTimeMs = 0;
  #recordOriginalLength = 0;
  #recordLength = 0;

  /** The global header, once read. */
  get header(): PcapHeader | undefined {
    return this.#header;
  }

  /** Bytes of an unfinished header or record (non-zero at the end means a truncated file). */
  get buffered(): number {
    return this.#queue.length;
  }

  push(chunk: Buffer): PcapRecord[] {
    this.#queue.push(chunk);
    const records: PcapRecord[] = [];
    for (;;) {
      if (this.#state === "GLOBAL_HEADER") {
        if (this.#queue.length < GLOBAL_HEADER_LENGTH) return records;
        this.#header = decodeHeader(this.#queue.consume(GLOBAL_HEADER_LENGTH));
        this.#state = "RECORD_HEADER";
      } else if (this.#state === "RECORD_HEADER") {
        if (this.#queue.length < RECORD_HEADER_LENGTH) return records;
        this.#readRecordHeader(this.#queue.consume(RECORD_HEADER_LENGTH));
        this.#state = "RECORD_DATA";
      } else {
        if (this.#queue.length < this.#recordLength) return records;
        const data = this.#queue.consume(this.#recordLength);
        records.push({ timeMs: this.#recordTimeMs, originalLength: this.#recordOriginalLength, data });
        this.#state = "RECORD_HEADER";
      }
    }
  }

  #readRecordHeader(raw: Buffer): void {
    const header = this.#header;
    if (header === undefined) throw new HrError("PCAP_INVALID", "pcap record before the global header");
    const read = (offset: number): number =>
      header.littleEndian ? raw.readUInt32LE(offset) : raw.readUInt32BE(offset);
    const length = read(INCL_LEN_OFFSET);
    if (length > MAX_RECORD_LENGTH) {
      throw new HrError("PCAP_INVALID", `pcap record of ${length} bytes exceeds ${MAX_RECORD_LENGTH}`);
    }
    const fractionMs = header.nanoseconds ? read(TS_FRACTION_OFFSET) / 1e6 : read(TS_FRACTION_OFFSET) / 1e3;
    this.#recordTimeMs = read(TS_SEC_OFFSET) * 1000 + fractionMs;
    this.#recordOriginalLength = read(ORIG_LEN_OFFSET);
    this.#recordLength = length;
  }
}

function decodeHeader(raw: Buffer): PcapHeader {
  const magicLE = raw.readUInt32LE(MAGIC_OFFSET);
  const magicBE = raw.readUInt32BE(MAGIC_OFFSET);
  const littleEndian = magicLE === MAGIC_MICROSECONDS || magicLE === MAGIC_NANOSECONDS;
  const magic = littleEndian ? magicLE : magicBE;
  if (magic !== MAGIC_MICROSECONDS && magic !== MAGIC_NANOSECONDS) {
    throw new HrError("PCAP_INVALID", `not a pcap file (magic 0x${magicBE.toString(16)})`, {
      hint: "pcapng files are not supported; convert with editcap -F pcap",
    });
  }
  const u16 = (offset: number): number =>
    littleEndian ? raw.readUInt16LE(offset) : raw.readUInt16BE(offset);
  const u32 = (offset: number): number =>
    littleEndian ? raw.readUInt32LE(offset) : raw.readUInt32BE(offset);
  const versionMajor = u16(VERSION_MAJOR_OFFSET);
  if (versionMajor !== 2) throw new HrError("PCAP_INVALID", `unsupported pcap version ${versionMajor}`);
  return {
    versionMajor,
    versionMinor: u16(VERSION_MINOR_OFFSET),
    snaplen: u32(SNAPLEN_OFFSET),
    linktype: u32(LINKTYPE_OFFSET),
    nanoseconds: magic === MAGIC_NANOSECONDS,
    littleEndian,
  };
}

/** A whole pcap file in memory. Throws PCAP_INVALID, also for a truncated last record. */
export function parsePcap(file: Buffer): { header: PcapHeader; records: PcapRecord[] } {
  const decoder = new PcapDecoder();
  const records = decoder.push(file);
  if (decoder.header === undefined || decoder.buffered > 0) {
    throw new HrError("PCAP_INVALID", "pcap file is truncated");
  }
  return { header: decoder.header, records };
}
