/**
 * The elastic working-set window of the `hotrestore` strategy (DESIGN.md §5), as a page-server
 * policy. Pure: no I/O, no clock (times come with the fault events).
 *
 *   working set:  [ W0 (loaded before start) | w1 w2 w3 ... wn ]  then every other page
 *                                 guest ▲        ◄─ window W ─►
 *
 * - The W0 prefix is prefetched by the server before the package (not this policy's business);
 *   between the package and `cont` the policy goes on through the working set (the VM is paused,
 *   nothing competes).
 * - After start the policy keeps at most W working-set pages ahead of the guest's position: the
 *   furthest working-set entry the guest has faulted on. When the window is full it fills with
 *   pages outside the working set in address order (`fillWhenFull`; measured: pausing instead held
 *   the whole background back and made the guest wait longer on its other pages, see README), and
 *   pauses only when nothing else is left; a pause that ends without a fault slides the window.
 * - A fault on a working-set page that was not yet sent means the window is too small: W grows
 *   (× `grow`, up to `maxWindow`) and the guest's position jumps there. A fault on a page that was
 *   already on its way only moves the position (the window was large enough, the page was late).
 * - A fault outside the working set means the prediction has drifted: W shrinks (× `shrink`, down
 *   to `minWindow`) and on-demand service takes the lead.
 * - When the working set is exhausted, the rest goes in address order, `restBatchPages` at a time
 *   with a pause of `restPauseMs` between batches (0: as fast as the server's flow control lets):
 *   low priority, faults always go first.
 * Every change of W is logged (µs since t0, W) for the report.
 */
import type { FaultEvent, PagePolicy, PolicyPause, PolicyView } from "./page-server-policy.ts";
import { AddressOrderPolicy } from "./page-server-policy.ts";
import type { PageRef } from "./page-server-space.ts";

export interface ElasticWindowOptions {
  initialWindow: number;
  minWindow: number;
  maxWindow: number;
  grow: number;
  shrink: number;
  /** When the window is full: send other pages in address order (true) or pause (false). */
  fillWhenFull: boolean;
  /** Background pause when the window is full and nothing else is to be sent (ms). */
  idleMs: number;
  /** Pages per address-order batch once the working set is exhausted. */
  restBatchPages: number;
  /** Pause between two address-order batches (ms); 0 for none. */
  restPauseMs: number;
}

export const DEFAULT_ELASTIC: Readonly<ElasticWindowOptions> = {
  initialWindow: 256,
  minWindow: 32,
  maxWindow: 16_384,
  grow: 2,
  shrink: 0.5,
  fillWhenFull: true,
  idleMs: 2,
  restBatchPages: 256,
  restPauseMs: 0,
};

export interface WindowSample {
  /** µs since the restore's t0 (0 before the first fault). */
  atUs: number;
  pages: number;
  why: "start" | "grow" | "shrink" | "slide";
}

export interface ElasticStats {
  window: WindowSample[];
  /** Faults on working-set pages not yet sent / already sent / outside the working set. */
  faultsInSetUnsent: number;
  faultsInSetInFlight: number;
  faultsOutsideSet: number;
  /** How far into the working set the guest got (entries). */
  guestPosition: number;
  workingSetPages: number;
}

export class ElasticWindowPolicy implements PagePolicy {
  readonly name = "elastic";
  readonly #refs: readonly PageRef[];
  readonly #options: ElasticWindowOptions;
  readonly #rest = new AddressOrderPolicy();
  /** Working-set entries as page indexes, and each page's position in it. */
  #order: number[] | undefined;
  #position = new Map<number, number>();
  #window: number;
  #guest = 0;
  #cursor = 0;
  #lastAtUs = 0;
  #faultSincePause = false;
  #pausedFull = false;
  #restPaused = false;
  readonly #samples: WindowSample[] = [];
  readonly #counts = { unsent: 0, inFlight: 0, outside: 0 };

  /** `workingSet`: the snapshot's working set, in order, W0 included (those pages are skipped as sent). */
  constructor(workingSet: readonly PageRef[], options: Partial<ElasticWindowOptions> = {}) {
    this.#refs = workingSet;
    this.#options = { ...DEFAULT_ELASTIC, ...options };
    this.#window = this.#clamp(this.#options.initialWindow);
  }

  get window(): number {
    return this.#window;
  }

  stats(): ElasticStats {
    return {
      window: [...this.#samples],
      faultsInSetUnsent: this.#counts.unsent,
      faultsInSetInFlight: this.#counts.inFlight,
      faultsOutsideSet: this.#counts.outside,
      guestPosition: this.#guest,
      workingSetPages: this.#order?.length ?? 0,
    };
  }

  nextBatch(max: number, view: PolicyView): number[] | PolicyPause {
    const order = this.#resolve(view);
    if (this.#pausedFull) {
      this.#pausedFull = false;
      // The pause ended without a fault: the guest is served from the window; slide it.
      if (!this.#faultSincePause) this.#slide();
    }
    const limit = view.started ? this.#guest + this.#window : order.length;
    const out: number[] = [];
    while (this.#cursor < order.length && this.#cursor < limit && out.length < max) {
      const index = order[this.#cursor]!;
      this.#cursor += 1;
      if (view.isUnsent(index)) out.push(index);
    }
    if (out.length > 0) return out;
    if (this.#cursor < order.length && this.#options.fillWhenFull) {
      const fill = this.#rest.nextBatch(Math.min(max, this.#options.restBatchPages), view);
      if (fill.length > 0) return fill;
    }
    if (this.#cursor < order.length) {
      this.#pausedFull = true;
      this.#faultSincePause = false;
      return { pauseMs: this.#options.idleMs };
    }
    return this.#restBatch(max, view);
  }

  onFault(fault: FaultEvent, view: PolicyView): void {
    this.#resolve(view);
    this.#faultSincePause = true;
    this.#lastAtUs = fault.atUs;
    if (!fault.afterStart) return;
    const at = this.#position.get(fault.index);
    if (at === undefined) {
      this.#counts.outside += 1;
      this.#resize(this.#window * this.#options.shrink, "shrink");
      return;
    }
    this.#guest = Math.max(this.#guest, at + 1);
    if (this.#cursor < this.#guest) this.#cursor = this.#guest;
    if (fault.inFlight) {
      this.#counts.inFlight += 1;
      return;
    }
    this.#counts.unsent += 1;
    this.#resize(this.#window * this.#options.grow, "grow");
  }

  onStart(view: PolicyView): void {
    this.#resolve(view);
    this.#samples.push({ atUs: this.#lastAtUs, pages: this.#window, why: "start" });
  }

  #restBatch(max: number, view: PolicyView): number[] | PolicyPause {
    const pause = this.#options.restPauseMs;
    if (pause > 0 && view.started && !this.#restPaused) {
      this.#restPaused = true;
      return { pauseMs: pause };
    }
    this.#restPaused = false;
    return this.#rest.nextBatch(Math.min(max, this.#options.restBatchPages), view);
  }

  #slide(): void {
    const order = this.#order ?? [];
    this.#guest = Math.min(order.length, this.#guest + this.#window);
  }

  #resize(pages: number, why: WindowSample["why"]): void {
    const next = this.#clamp(pages);
    if (next === this.#window) return;
    this.#window = next;
    this.#samples.push({ atUs: this.#lastAtUs, pages: next, why });
  }

  #clamp(pages: number): number {
    const { minWindow, maxWindow } = this.#options;
    return Math.max(minWindow, Math.min(maxWindow, Math.round(pages)));
  }

  /** Maps the working set to page indexes once (unknown pages are dropped, duplicates kept once). */
  #resolve(view: PolicyView): number[] {
    if (this.#order !== undefined) return this.#order;
    const order: number[] = [];
    for (const ref of this.#refs) {
      const index = view.space.tryIndex(ref.blockId, ref.page);
      if (index === undefined || this.#position.has(index)) continue;
      this.#position.set(index, order.length);
      order.push(index);
    }
    this.#order = order;
    return order;
  }
}
