/**
 * Working set at snapshot time, from the order of a background snapshot's stream. Pure.
 *
 * How QEMU 7.2 orders a background snapshot (measured on real streams, see migration/ram.c
 * `ram_find_and_save_block`): a scan walks guest RAM in address order, blocks in the order of
 * the ram START section, wrapping around, and sends every page not sent yet. When the guest
 * writes a write-protected page, QEMU queues it and sends it next, out of order, and the scan
 * then carries on *from that page*. So a page starts a "jump" unless every page between the
 * previous page and it (in scan order) was already sent. Pages that jump are the ones the guest
 * wrote after the cut, in the order it first wrote them.
 */
export interface PageRef {
  block: number;
  page: number;
}

/** Smallest index >= i that is not marked yet (union-find with path halving). */
class NextUnsent {
  private readonly next: Int32Array;

  constructor(size: number) {
    this.next = new Int32Array(size + 1);
    for (let i = 0; i <= size; i += 1) this.next[i] = i;
  }

  find(index: number): number {
    let i = index;
    while ((this.next[i] ?? i) !== i) {
      const parent = this.next[i] ?? i;
      this.next[i] = this.next[parent] ?? parent;
      i = this.next[i] ?? i;
    }
    return i;
  }

  mark(index: number): void {
    this.next[index] = index + 1;
  }
}

/**
 * The pages the guest wrote while its background snapshot ran, in stream order.
 * `blockPages` is the page count of each block, in START order.
 */
export function writesAfterCut(stream: readonly PageRef[], blockPages: readonly number[]): PageRef[] {
  const base: number[] = [];
  let total = 0;
  for (const pages of blockPages) {
    base.push(total);
    total += pages;
  }
  const unsent = new NextUnsent(total);
  const sent = new Uint8Array(total);
  const writes: PageRef[] = [];
  let previous = -1;
  for (const ref of stream) {
    const index = (base[ref.block] ?? 0) + ref.page;
    if (index < 0 || index >= total || sent[index] === 1) continue;
    const ahead = unsent.find(previous + 1);
    const continues = ahead === index || (ahead === total && unsent.find(0) === index);
    if (!continues) writes.push(ref);
    sent[index] = 1;
    unsent.mark(index);
    previous = index;
  }
  return writes;
}
