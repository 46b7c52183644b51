/**
 * The page server's time limits: device state loaded within `preparedTimeoutMs`, every page
 * delivered within `doneTimeoutMs`, and never `stallTimeoutMs` without progress (a byte read from
 * the destination, a drain of our queue, a write), nor a requested page unsent for that long
 * (a store read that hangs while the destination keeps talking). Each breach calls `fail` with an
 * HrError naming the VM; `stop()` clears every timer.
 */
import type { HrError } from "../../util/errors.ts";
import { pageServerError } from "./page-server-errors.ts";
import type { PageServerTuning } from "./page-server-types.ts";

export class Watchdog {
  readonly #timers: NodeJS.Timeout[] = [];
  #lastActivity = performance.now();

  constructor(
    vm: string,
    tuning: Pick<PageServerTuning, "preparedTimeoutMs" | "doneTimeoutMs" | "stallTimeoutMs">,
    isPrepared: () => boolean,
    fail: (error: HrError) => void,
    oldestRequest: () => number | undefined = () => undefined,
  ) {
    const timeout = (what: string): void => fail(pageServerError("PAGE_SERVER_TIMEOUT", vm, what));
    const stall = tuning.stallTimeoutMs;
    this.#timers.push(
      setTimeout(() => {
        if (!isPrepared()) timeout(`device state not loaded within ${tuning.preparedTimeoutMs} ms`);
      }, tuning.preparedTimeoutMs),
      setTimeout(
        () => timeout(`not every page delivered within ${tuning.doneTimeoutMs} ms`),
        tuning.doneTimeoutMs,
      ),
      setInterval(
        () => {
          const now = performance.now();
          const waitingMs = now - (oldestRequest() ?? now);
          if (waitingMs > stall) {
            const what = `a page requested ${Math.round(waitingMs)} ms ago is still not read from the store`;
            const hint = "the snapshot store stopped answering; check the disk or mount it lives on";
            fail(pageServerError("PAGE_SERVER_STALLED", vm, what, { hint }));
            return;
          }
          const idleMs = now - this.#lastActivity;
          if (idleMs <= stall) return;
          const what = `no progress for ${Math.round(idleMs)} ms`;
          const hint = "the page server or the destination QEMU stopped moving; see the VM's qemu.log";
          fail(pageServerError("PAGE_SERVER_STALLED", vm, what, { hint }));
        },
        Math.max(10, Math.min(1_000, stall / 4)),
      ),
    );
  }

  /** Something moved. */
  activity(): void {
    this.#lastActivity = performance.now();
  }

  stop(): void {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.length = 0;
  }
}
