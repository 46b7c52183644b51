/**
 * Frames waiting for one switch port while it is held, in arrival order, bounded in bytes: when
 * a new frame would pass `maxBytes`, the oldest frames are dropped (and counted) to make room.
 * Frames are copied on entry so a small frame never pins a large socket read buffer.
 */
export class HoldQueue {
  readonly #maxBytes: number;
  #frames: (Buffer | undefined)[] = [];
  #head = 0;
  #bytes = 0;
  #dropped = 0;
  #droppedBytes = 0;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  get frames(): number {
    return this.#frames.length - this.#head;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Frames dropped because the queue was full, since it was created. */
  get dropped(): number {
    return this.#dropped;
  }

  get droppedBytes(): number {
    return this.#droppedBytes;
  }

  push(frame: Buffer): void {
    if (frame.length > this.#maxBytes) {
      this.#countDrop(frame.length);
      return;
    }
    while (this.#bytes + frame.length > this.#maxBytes) {
      const oldest = this.#frames[this.#head];
      if (oldest === undefined) break;
      this.#frames[this.#head] = undefined;
      this.#head++;
      this.#bytes -= oldest.length;
      this.#countDrop(oldest.length);
    }
    this.#frames.push(Buffer.from(frame));
    this.#bytes += frame.length;
    if (this.#head > 1024 && this.#head * 2 > this.#frames.length) this.#compact();
  }

  /** The queued frames in order, without removing them. */
  peek(): Buffer[] {
    return this.#frames.slice(this.#head).filter((frame) => frame !== undefined);
  }

  /** Removes and returns every queued frame, in order. */
  drain(): Buffer[] {
    const out = this.peek();
    this.#frames = [];
    this.#head = 0;
    this.#bytes = 0;
    return out;
  }

  #countDrop(bytes: number): void {
    this.#dropped++;
    this.#droppedBytes += bytes;
  }

  #compact(): void {
    this.#frames = this.#frames.slice(this.#head);
    this.#head = 0;
  }
}
