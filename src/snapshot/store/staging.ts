import { PAGE_SIZE } from "./layout.ts";

/**
 * Pages waiting to be written, for every block of one VM: a slab of page slots plus, per block,
 * page number → slot (or ZERO_SLOT: write zeros there). Rewriting a staged page reuses its slot,
 * so the last version wins. Full when the slots run out, or when many zero entries pile up.
 */

export const ZERO_SLOT = -1;
const ZERO_ENTRIES_PER_SLOT = 4;

export class Staging {
  readonly capacity: number;
  readonly #slab: Buffer;
  readonly #maps: Map<number, number>[];
  #used = 0;
  #entries = 0;

  constructor(capacity: number, blocks: number) {
    this.capacity = capacity;
    this.#slab = Buffer.allocUnsafe(capacity * PAGE_SIZE);
    this.#maps = Array.from({ length: blocks }, () => new Map<number, number>());
  }

  get entries(): number {
    return this.#entries;
  }

  /** Slots holding data (a rewritten page counts once). */
  get dataPages(): number {
    return this.#used;
  }

  isFull(): boolean {
    return this.#used >= this.capacity || this.#entries >= this.capacity * ZERO_ENTRIES_PER_SLOT;
  }

  #map(block: number): Map<number, number> {
    const map = this.#maps[block];
    if (map === undefined) throw new RangeError(`no block slot ${block}`);
    return map;
  }

  putData(block: number, page: number, data: Buffer): void {
    const map = this.#map(block);
    let slot = map.get(page);
    if (slot === undefined) this.#entries++;
    if (slot === undefined || slot === ZERO_SLOT) slot = this.#used++;
    data.copy(this.#slab, slot * PAGE_SIZE, 0, PAGE_SIZE);
    map.set(page, slot);
  }

  putZero(block: number, page: number): void {
    const map = this.#map(block);
    if (!map.has(page)) this.#entries++;
    map.set(page, ZERO_SLOT);
  }

  /** Forgets a staged page (a zero page over data that never reached the disk). */
  drop(block: number, page: number): void {
    if (this.#map(block).delete(page)) this.#entries--;
  }

  /** The staged bytes of a page; undefined for a zero entry. */
  bytesOf(block: number, page: number): Buffer | undefined {
    const slot = this.#map(block).get(page);
    if (slot === undefined || slot === ZERO_SLOT) return undefined;
    return this.#slab.subarray(slot * PAGE_SIZE, (slot + 1) * PAGE_SIZE);
  }

  forEachData(visit: (block: number, page: number) => void): void {
    this.#maps.forEach((map, block) => {
      for (const [page, slot] of map) if (slot !== ZERO_SLOT) visit(block, page);
    });
  }

  sortedPages(block: number): Uint32Array {
    return Uint32Array.from(this.#map(block).keys()).sort();
  }

  reset(): void {
    for (const map of this.#maps) map.clear();
    this.#used = 0;
    this.#entries = 0;
  }
}
