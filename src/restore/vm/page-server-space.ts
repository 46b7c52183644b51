/**
 * The pages of one VM as the page server sees them: every page of every RAM block numbered
 * once, in the order of the ram START section (block 0's pages, then block 1's, ...). A page's
 * number is its *index*; policies and the fault log work on indexes, callers on PageRefs
 * (block id + page number, the shape of the snapshot store's working-set entries).
 *
 * PageStates keeps one byte per page: UNSENT → CLAIMED (picked by the request or background
 * path, its data being read) → WRITTEN (its record handed to the socket). A page only ever moves
 * forward, so it is written at most once. Pure: no I/O.
 *
 * A page the snapshot holds as zero can instead be LEFT: the background never sends it, because
 * the destination already reads it as zero — QEMU 7.2 discards every RAM block at POSTCOPY_ADVISE
 * (postcopy_ram_incoming_init → init_range → ram_discard_range) and, after EOF, unregisters its
 * userfaultfd (postcopy_ram_incoming_cleanup), which wakes any vCPU still waiting on such a page
 * and lets the kernel map a fresh zero page. A LEFT page the destination asks for before EOF is
 * claimed like an UNSENT one and served (a 9-byte zero record). The restore bench's 512 MiB `mem`
 * VM (a 205 MiB workload area): 60,000 of its 131,000 pages are zero.
 */
import { HrError } from "../../util/errors.ts";

export const PAGE_BYTES = 4096;

/** A page of a RAM block: the shape of the store's WorkingSetEntry. */
export interface PageRef {
  blockId: string;
  page: number;
}

export interface SpaceBlock {
  id: string;
  pages: number;
  /** Index of the block's first page. */
  base: number;
}

export class PageSpace {
  readonly blocks: readonly SpaceBlock[];
  readonly total: number;
  readonly #byId: Map<string, SpaceBlock>;

  constructor(blocks: readonly { id: string; usedLength: number }[]) {
    const out: SpaceBlock[] = [];
    let base = 0;
    for (const block of blocks) {
      if (block.usedLength <= 0 || block.usedLength % PAGE_BYTES !== 0) {
        throw new HrError(
          "PAGE_SERVER_BAD_INPUT",
          `RAM block ${block.id}: length ${block.usedLength} is not a positive multiple of 4096`,
        );
      }
      const pages = block.usedLength / PAGE_BYTES;
      out.push({ id: block.id, pages, base });
      base += pages;
    }
    this.blocks = out;
    this.total = base;
    this.#byId = new Map(out.map((block) => [block.id, block]));
  }

  block(id: string): SpaceBlock | undefined {
    return this.#byId.get(id);
  }

  /** The index of a page, or undefined when the block is unknown or the page past its end. */
  tryIndex(blockId: string, page: number): number | undefined {
    const block = this.#byId.get(blockId);
    if (block === undefined || !Number.isInteger(page) || page < 0 || page >= block.pages) return undefined;
    return block.base + page;
  }

  indexOf(ref: PageRef): number {
    const index = this.tryIndex(ref.blockId, ref.page);
    if (index === undefined) {
      throw new HrError("PAGE_SERVER_BAD_INPUT", `page ${ref.page} of block ${ref.blockId} does not exist`);
    }
    return index;
  }

  blockOfIndex(index: number): SpaceBlock {
    // A VM has a handful of blocks: a linear scan beats anything clever.
    for (const block of this.blocks) {
      if (index >= block.base && index < block.base + block.pages) return block;
    }
    throw new HrError("PAGE_SERVER_BAD_INPUT", `page index ${index} is outside the VM's RAM`);
  }

  refOf(index: number): PageRef {
    const block = this.blockOfIndex(index);
    return { blockId: block.id, page: index - block.base };
  }

  /** Indexes of a list of refs (throws on a page that does not exist). */
  indexesOf(refs: readonly PageRef[]): number[] {
    return refs.map((ref) => this.indexOf(ref));
  }
}

export const PageState = { UNSENT: 0, CLAIMED: 1, WRITTEN: 2, LEFT: 3 } as const;

export class PageStates {
  readonly #states: Uint8Array;
  #unsent: number;
  #written = 0;
  #left = 0;
  /** Every index below it is no longer UNSENT (for the final sweep). */
  #sweep = 0;

  constructor(total: number) {
    this.#states = new Uint8Array(total);
    this.#unsent = total;
  }

  get total(): number {
    return this.#states.length;
  }

  get unsent(): number {
    return this.#unsent;
  }

  get written(): number {
    return this.#written;
  }

  /** LEFT pages: zero, never sent, never asked for. */
  get left(): number {
    return this.#left;
  }

  /** Every page written or left to the destination's zero. */
  get settled(): boolean {
    return this.#written + this.#left === this.#states.length;
  }

  /** Every page `isPresent` says the snapshot holds as zero: UNSENT → LEFT. */
  leaveAbsent(space: PageSpace, isPresent: (blockId: string, page: number) => boolean): void {
    for (const block of space.blocks) {
      for (let page = 0; page < block.pages; page += 1) {
        if (!isPresent(block.id, page)) this.leave(block.base + page);
      }
    }
  }

  /** UNSENT → LEFT (a zero page only the destination's request will send); false otherwise. */
  leave(index: number): boolean {
    if (this.#states[index] !== PageState.UNSENT) return false;
    this.#states[index] = PageState.LEFT;
    this.#unsent -= 1;
    this.#left += 1;
    return true;
  }

  /** Neither claimed nor written: UNSENT or LEFT (what a request may still pick). */
  isPending(index: number): boolean {
    const state = this.#states[index];
    return state === PageState.UNSENT || state === PageState.LEFT;
  }

  isUnsent(index: number): boolean {
    return this.#states[index] === PageState.UNSENT;
  }

  isWritten(index: number): boolean {
    return this.#states[index] === PageState.WRITTEN;
  }

  /** UNSENT → CLAIMED; false when the page was already claimed or written. */
  claim(index: number): boolean {
    if (this.#states[index] !== PageState.UNSENT) return false;
    this.#states[index] = PageState.CLAIMED;
    this.#unsent -= 1;
    return true;
  }

  /** UNSENT or LEFT → CLAIMED: a page the destination asked for. */
  claimRequested(index: number): boolean {
    if (this.#states[index] === PageState.LEFT) {
      this.#states[index] = PageState.UNSENT;
      this.#unsent += 1;
      this.#left -= 1;
    }
    return this.claim(index);
  }

  /** CLAIMED → WRITTEN. Writing a page twice is a bug in the caller: it throws. */
  markWritten(index: number): void {
    if (this.#states[index] !== PageState.CLAIMED) {
      throw new HrError("PAGE_SERVER_INTERNAL", `page index ${index} written without a claim, or twice`);
    }
    this.#states[index] = PageState.WRITTEN;
    this.#written += 1;
  }

  /** Up to `max` UNSENT indexes in address order (the safety net after the policy). */
  nextUnsent(max: number): number[] {
    const out: number[] = [];
    const states = this.#states;
    while (this.#sweep < states.length && states[this.#sweep] !== PageState.UNSENT) this.#sweep += 1;
    for (let index = this.#sweep; index < states.length && out.length < max; index += 1) {
      if (states[index] === PageState.UNSENT) out.push(index);
    }
    return out;
  }
}
