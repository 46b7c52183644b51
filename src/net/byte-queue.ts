/**
 * A queue of received chunks with a running byte count, for stream parsers (undici's ByteParser
 * habit): `push` keeps each chunk as it came, `consume(n)` returns the next n bytes and copies
 * only when they span more than one chunk. Parsers check `length` before consuming and return to
 * wait for more data when too few bytes are buffered. Pure logic, no I/O.
 */
export class ByteQueue {
  #chunks: Buffer[] = [];
  #length = 0;

  /** Bytes buffered and not yet consumed. */
  get length(): number {
    return this.#length;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** The next n bytes, removed from the queue. Throws RangeError if fewer are buffered (a bug). */
  consume(n: number): Buffer {
    if (n > this.#length) throw new RangeError(`consume(${n}) with ${this.#length} bytes buffered`);
    this.#length -= n;
    const first = this.#chunks[0];
    if (n === 0 || first === undefined) return Buffer.alloc(0);
    if (first.length === n) {
      this.#chunks.shift();
      return first;
    }
    if (first.length > n) {
      this.#chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0];
      if (chunk === undefined) break;
      const take = Math.min(chunk.length, n - filled);
      chunk.copy(out, filled, 0, take);
      filled += take;
      if (take === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(take);
    }
    return out;
  }

  /** Drops everything buffered (after a protocol error). */
  clear(): void {
    this.#chunks = [];
    this.#length = 0;
  }
}
