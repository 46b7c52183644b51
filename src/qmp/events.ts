import type { HrError } from "../util/errors.ts";
import { qmpError } from "./errors.ts";
import type { QmpEvent } from "./types.ts";

export interface WaitForEventOptions<N extends string = string> {
  timeoutMs: number;
  /** Only events for which this returns true settle the wait; a throw rejects it. */
  predicate?: (event: QmpEvent<N>) => boolean;
  signal?: AbortSignal;
}

interface Waiter {
  name: string;
  accept: (event: QmpEvent) => boolean;
  reject: (error: Error) => void;
}

/**
 * Fan-out of QMP events: plain listeners, and one-shot waiters armed before the command that
 * causes the event is sent (QEMU often emits the event before the command's reply, e.g. SHUTDOWN
 * before quit's `{}`). Events are not buffered: a waiter sees only events dispatched after it was armed.
 */
export class EventHub {
  readonly #listeners = new Set<(event: QmpEvent) => void>();
  readonly #waiters = new Set<Waiter>();
  #closedBy: HrError | undefined;

  on(listener: (event: QmpEvent) => void): void {
    this.#listeners.add(listener);
  }

  off(listener: (event: QmpEvent) => void): void {
    this.#listeners.delete(listener);
  }

  wait<N extends string>(name: N, options: WaitForEventOptions<N>): Promise<QmpEvent<N>> {
    const promise = new Promise<QmpEvent<N>>((resolve, reject) => {
      if (this.#closedBy !== undefined) return reject(closedError(name, this.#closedBy));
      if (options.signal?.aborted === true) return reject(abortError(options.signal));
      const settle = (): void => {
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
        this.#waiters.delete(waiter);
      };
      const waiter: Waiter = {
        name,
        accept: (event) => {
          const typed = event as QmpEvent<N>;
          if (options.predicate !== undefined && !options.predicate(typed)) return false;
          settle();
          resolve(typed);
          return true;
        },
        reject: (error) => {
          settle();
          reject(error);
        },
      };
      const timer = setTimeout(() => {
        waiter.reject(qmpError("QMP_TIMEOUT", `no ${name} event within ${options.timeoutMs} ms`));
      }, options.timeoutMs);
      const onAbort = (): void => waiter.reject(abortError(options.signal));
      options.signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiters.add(waiter);
    });
    // Armed-then-awaited-later is the intended use; never let a rejection in between crash the process.
    promise.catch(() => undefined);
    return promise;
  }

  dispatch(event: QmpEvent): void {
    for (const listener of [...this.#listeners]) {
      try {
        listener(event);
      } catch (error) {
        // A listener's bug must not corrupt the decoder; surface it like an EventEmitter would.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
    for (const waiter of [...this.#waiters]) {
      if (waiter.name !== event.event) continue;
      try {
        waiter.accept(event);
      } catch (error) {
        waiter.reject(error instanceof Error ? error : new Error(String(error)));
      }
    }
  }

  /** Rejects every waiter with QMP_CLOSED; later waits reject at once. */
  close(reason: HrError): void {
    if (this.#closedBy !== undefined) return;
    this.#closedBy = reason;
    for (const waiter of [...this.#waiters]) waiter.reject(closedError(waiter.name, reason));
  }
}

function abortError(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason;
  return reason instanceof Error ? reason : new Error(`aborted: ${String(reason)}`);
}

function closedError(name: string, reason: HrError): HrError {
  return qmpError("QMP_CLOSED", `waiting for ${name}: QMP connection closed`, { cause: reason });
}
