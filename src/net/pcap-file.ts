import { createWriteStream, type WriteStream } from "node:fs";
import { once } from "node:events";
import { HrError, messageOf } from "../util/errors.ts";
import { encodePcapHeader, encodePcapRecord } from "./pcap.ts";

/**
 * Appends frames to a pcap file without ever blocking the switch: writes go through a stream,
 * and while more than `maxBufferedBytes` wait for the disk, new frames are dropped and counted.
 */
export class PcapFileWriter {
  readonly path: string;
  readonly #stream: WriteStream;
  readonly #maxBufferedBytes: number;
  #frames = 0;
  #dropped = 0;
  #error: unknown;
  #closed = false;

  private constructor(path: string, stream: WriteStream, maxBufferedBytes: number) {
    this.path = path;
    this.#stream = stream;
    this.#maxBufferedBytes = maxBufferedBytes;
    stream.on("error", (error) => {
      this.#error ??= error;
    });
  }

  /** Creates (truncates) the file and writes the global header. Throws PCAP_OPEN_FAILED. */
  static async open(path: string, options: { maxBufferedBytes?: number } = {}): Promise<PcapFileWriter> {
    const stream = createWriteStream(path, { mode: 0o600 });
    try {
      await once(stream, "open");
    } catch (error) {
      throw new HrError("PCAP_OPEN_FAILED", `cannot create pcap file ${path}: ${messageOf(error)}`, {
        cause: error,
        hint: "check that the directory exists and is writable",
      });
    }
    const writer = new PcapFileWriter(path, stream, options.maxBufferedBytes ?? 16 * 1024 * 1024);
    stream.write(encodePcapHeader());
    return writer;
  }

  get frames(): number {
    return this.#frames;
  }

  /** Frames not written because the disk fell behind or the file failed. */
  get dropped(): number {
    return this.#dropped;
  }

  write(frame: Buffer, timeMs: number): void {
    if (this.#closed) return;
    if (this.#error !== undefined || this.#stream.writableLength > this.#maxBufferedBytes) {
      this.#dropped++;
      return;
    }
    this.#stream.write(encodePcapRecord(frame, timeMs));
    this.#frames++;
  }

  /** Flushes and closes the file. Throws PCAP_WRITE_FAILED if any write failed. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#stream.destroyed) {
      const finished = once(this.#stream, "close");
      this.#stream.end();
      await finished.catch(() => undefined);
    }
    if (this.#error !== undefined) {
      throw new HrError("PCAP_WRITE_FAILED", `writing ${this.path} failed: ${messageOf(this.#error)}`, {
        cause: this.#error,
      });
    }
  }
}
