/**
 * A bounded log of forwarded frames, oldest first, for building the dependency graph later:
 * at most `maxEntries` entries, and none older than `maxAgeMs` before the newest one. A ring
 * buffer, so appending never copies. Pure logic: timestamps come in with each entry.
 */
export const FLOODED = "*";

export interface TrafficLogTcp {
  flowKey: string;
  seq: number;
  ack: number;
  /** Payload bytes. */
  len: number;
  /** TCP_* bits. */
  flags: number;
}

export interface TrafficLogEntry {
  /** Milliseconds, the switch's clock. */
  t: number;
  from: string;
  /** Destination port, or FLOODED ("*") for a frame flooded to every other port. */
  to: string;
  /** Ethernet frame length. */
  bytes: number;
  tcp?: TrafficLogTcp;
}

export class TrafficLog {
  readonly #maxEntries: number;
  readonly #maxAgeMs: number;
  readonly #ring: (TrafficLogEntry | undefined)[];
  #head = 0;
  #size = 0;
  #dropped = 0;

  constructor(options: { maxEntries?: number; maxAgeMs?: number } = {}) {
    this.#maxEntries = Math.max(1, options.maxEntries ?? 100_000);
    this.#maxAgeMs = options.maxAgeMs ?? 30_000;
    this.#ring = new Array<TrafficLogEntry | undefined>(this.#maxEntries).fill(undefined);
  }

  get size(): number {
    return this.#size;
  }

  /** Entries that fell out of the log (full, or too old). */
  get dropped(): number {
    return this.#dropped;
  }

  push(entry: TrafficLogEntry): void {
    if (this.#size === this.#maxEntries) this.#shift();
    this.#ring[(this.#head + this.#size) % this.#maxEntries] = entry;
    this.#size++;
    this.prune(entry.t);
  }

  /** Forgets entries older than `maxAgeMs` before `now`. */
  prune(now: number): void {
    for (;;) {
      const oldest = this.#ring[this.#head];
      if (this.#size === 0 || oldest === undefined || oldest.t >= now - this.#maxAgeMs) return;
      this.#shift();
    }
  }

  /** The entries with t >= since (all by default), oldest first. */
  entries(since = -Infinity): TrafficLogEntry[] {
    const out: TrafficLogEntry[] = [];
    for (let i = 0; i < this.#size; i++) {
      const entry = this.#ring[(this.#head + i) % this.#maxEntries];
      if (entry !== undefined && entry.t >= since) out.push(entry);
    }
    return out;
  }

  clear(): void {
    this.#ring.fill(undefined);
    this.#head = 0;
    this.#size = 0;
  }

  #shift(): void {
    this.#ring[this.#head] = undefined;
    this.#head = (this.#head + 1) % this.#maxEntries;
    this.#size--;
    this.#dropped++;
  }
}
