/**
 * Background ordering for the page server: which pages to send next when the destination is not
 * asking for any. A policy only *orders*; the server guarantees the rest (requested pages go
 * first, no page is sent twice, every page is sent: when a policy has nothing more to offer the
 * server sweeps what is left in address order). So a policy may be wrong or incomplete without
 * breaking a restore, only slowing it.
 *
 * The interface is what the elastic `hotrestore` window needs: it sees every fault as it arrives
 * (`onFault`, with whether the page was already in flight), learns when the VM starts (`onStart`)
 * and can change its order between two batches. Pure: no I/O, no clock (times come in events).
 */
import type { PageSpace } from "./page-server-space.ts";

export interface PolicyView {
  readonly space: PageSpace;
  /** Neither requested nor sent yet. */
  isUnsent(index: number): boolean;
  /** The VM was started (`cont`). */
  readonly started: boolean;
}

export interface FaultEvent {
  /** Page index (PageSpace numbering). */
  index: number;
  /** The page had already been picked (written or being read) when the request came. */
  inFlight: boolean;
  /** µs since the restore's t0. */
  atUs: number;
  afterStart: boolean;
}

export interface PolicyPause {
  pauseMs: number;
}

export interface PagePolicy {
  readonly name: string;
  /**
   * Up to `max` page indexes to send next, most wanted first. Pages that are no longer unsent are
   * skipped by the server; an empty array means the policy has nothing more to offer (the server
   * then sweeps the rest in address order). `{ pauseMs }` holds the background back for up to
   * that long (a fault or the end of the pause asks again): low priority, e.g. to leave the CPU
   * to a guest that just started. Requested pages are served whatever the policy says.
   */
  nextBatch(max: number, view: PolicyView): number[] | PolicyPause;
  /** The destination asked for a page (a vCPU or a device touched it). */
  onFault(fault: FaultEvent, view: PolicyView): void;
  /** The VM was started. */
  onStart(view: PolicyView): void;
}

/** Every page in address order (blocks in START order). */
export class AddressOrderPolicy implements PagePolicy {
  readonly name: string = "address";
  #cursor = 0;

  nextBatch(max: number, view: PolicyView): number[] {
    const out: number[] = [];
    const total = view.space.total;
    while (this.#cursor < total && out.length < max) {
      if (view.isUnsent(this.#cursor)) out.push(this.#cursor);
      this.#cursor += 1;
    }
    return out;
  }

  onFault(): void {
    // Address order does not react to faults: the server already serves them first.
  }

  onStart(): void {
    // Nothing changes at start.
  }
}

/** A given order first (e.g. a working set beyond what was prefetched), then address order. */
export class SequenceThenAddressPolicy implements PagePolicy {
  readonly name: string;
  readonly #order: readonly number[];
  readonly #rest = new AddressOrderPolicy();
  #at = 0;

  constructor(order: readonly number[], name = "sequence+address") {
    this.#order = order;
    this.name = name;
  }

  nextBatch(max: number, view: PolicyView): number[] {
    const out: number[] = [];
    while (this.#at < this.#order.length && out.length < max) {
      const index = this.#order[this.#at]!;
      this.#at += 1;
      if (view.isUnsent(index)) out.push(index);
    }
    return out.length > 0 ? out : this.#rest.nextBatch(max, view);
  }

  onFault(): void {
    // A fixed order: faults are served by the server and do not change it.
  }

  onStart(): void {
    // Nothing changes at start.
  }
}
