/**
 * Received chunks with a running byte count (undici's ByteParser habit), for every stream reader of
 * this project. `push` keeps each chunk as it came; `consume(n)` returns the next n bytes and
 * copies only when they span chunks (otherwise it returns a view of the pushed chunk: copy it if
 * you keep it); `peek*` read ahead without consuming. `consumed` counts every byte ever consumed,
 * for error messages ("at byte N"). Pure logic, no I/O.
 */
export class ByteQueue {
  #chunks: Buffer[] = [];
  #length = 0;
  #consumed = 0;

  /** Bytes buffered and not yet consumed. */
  get length(): number {
    return this.#length;
  }

  /** Stream offset of the next unconsumed byte. */
  get consumed(): number {
    return this.#consumed;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /** The byte at `index` from the front. Throws RangeError if not buffered (a bug). */
  peekByte(index: number): number {
    if (index >= this.#length) throw new RangeError(`peekByte(${index}) with ${this.#length} buffered`);
    let skip = index;
    for (const chunk of this.#chunks) {
      if (skip < chunk.length) return chunk[skip]!;
      skip -= chunk.length;
    }
    throw new RangeError("unreachable");
  }

  /** `n` bytes starting at `index` from the front, not consumed (a copy when they span chunks). */
  peek(index: number, n: number): Buffer {
    if (index + n > this.#length) throw new RangeError(`peek(${index}, ${n}) with ${this.#length} buffered`);
    let skip = index;
    let i = 0;
    while (i < this.#chunks.length && skip >= this.#chunks[i]!.length) {
      skip -= this.#chunks[i]!.length;
      i += 1;
    }
    const first = this.#chunks[i];
    if (first !== undefined && skip + n <= first.length) return first.subarray(skip, skip + n);
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[i]!;
      const take = Math.min(chunk.length - skip, n - filled);
      chunk.copy(out, filled, skip, skip + take);
      filled += take;
      skip = 0;
      i += 1;
    }
    return out;
  }

  peekUInt32BE(index: number): number {
    return this.peek(index, 4).readUInt32BE(0);
  }

  /** The next n bytes, removed from the queue. Throws RangeError if fewer are buffered (a bug). */
  consume(n: number): Buffer {
    if (n > this.#length) throw new RangeError(`consume(${n}) with ${this.#length} bytes buffered`);
    this.#length -= n;
    this.#consumed += n;
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
    let used = 0;
    while (filled < n) {
      const chunk = this.#chunks[used]!;
      const take = Math.min(chunk.length, n - filled);
      chunk.copy(out, filled, 0, take);
      filled += take;
      if (take === chunk.length) used += 1;
      else this.#chunks[used] = chunk.subarray(take);
    }
    // One splice, not a shift per chunk: shifting a long array moves all of it each time, which
    // made a record that arrived in many small chunks cost time quadratic in their number.
    this.#chunks.splice(0, used);
    return out;
  }

  /** Like consume, but the result is always a buffer of its own (never a view of a pushed chunk). */
  consumeCopy(n: number): Buffer {
    const first = this.#chunks[0];
    const spans = first === undefined || first.length < n;
    const bytes = this.consume(n);
    return spans ? bytes : Buffer.from(bytes);
  }

  /** Everything buffered, removed from the queue (as one buffer; a copy when several chunks). */
  consumeAll(): Buffer {
    return this.consume(this.#length);
  }

  /**
   * Makes the first `maxBytes` buffered bytes (all by default) one chunk, copying at most that
   * many, so that peeking within them costs O(1) again; for a parser that rescans a record which
   * arrived in many small chunks.
   */
  compact(maxBytes = this.#length): void {
    const n = Math.min(maxBytes, this.#length);
    const first = this.#chunks[0];
    if (first === undefined || first.length >= n) return;
    const merged = this.peek(0, n);
    let used = 0;
    for (let left = n; left > 0;) {
      const chunk = this.#chunks[used]!;
      if (chunk.length <= left) {
        left -= chunk.length;
        used += 1;
      } else {
        this.#chunks[used] = chunk.subarray(left);
        left = 0;
      }
    }
    this.#chunks.splice(0, used, merged);
  }

  clear(): void {
    this.#chunks = [];
    this.#length = 0;
  }
}
