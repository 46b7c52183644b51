/**
 * The fuzz harness shared by the short run (test/unit/fuzz/fuzz-short.test.ts, part of `npm test`)
 * and the long run (`npm run fuzz`, scripts/fuzz.ts). A target is a parser plus the inputs to feed
 * it; `run` returns "ok" or the code of the typed error (HrError) the parser raised, and throws a
 * FuzzFailure for anything else. `fuzzProperty` wraps it in a fast-check property that also
 * catches hangs (one input taking more than MAX_RUN_MS of CPU time) and unbounded allocation (ArrayBuffer
 * memory growing by more than MAX_ALLOCATION_BYTES during one input).
 */
import fc from "fast-check";
import { HrError, messageOf } from "../../src/util/errors.ts";

/** "ok", or the stable code of the typed error the parser threw. */
export type Outcome = string;
export const OK: Outcome = "ok";

/**
 * A hang detector, not a speed test: every input here parses in microseconds to milliseconds.
 * Measured in CPU time (this process's), so that a loaded machine descheduling the run is no hang.
 */
export const MAX_RUN_MS = 1000;
/** No generated input is larger than a few hundred KiB; a parser must not allocate far beyond. */
export const MAX_ALLOCATION_BYTES = 64 * 1024 * 1024;

export interface FuzzTarget {
  readonly name: string;
  /** One line: the parser and the inputs. */
  readonly about: string;
  readonly arbitrary: fc.Arbitrary<unknown>;
  /** Inputs whose length fields all claim huge sizes (for parsers of length-prefixed data). */
  readonly hugeLengths: fc.Arbitrary<unknown> | undefined;
  run(input: unknown): Outcome;
}

export interface TargetSpec<T> {
  name: string;
  about: string;
  arbitrary: fc.Arbitrary<T>;
  hugeLengths?: fc.Arbitrary<T>;
  run(input: T): Outcome;
}

/** Erases the input type, so targets of different inputs share one list. */
export function defineTarget<T>(spec: TargetSpec<T>): FuzzTarget {
  return {
    name: spec.name,
    about: spec.about,
    arbitrary: spec.arbitrary,
    hugeLengths: spec.hugeLengths,
    run: (input) => spec.run(input as T),
  };
}

/** Anything a parser did that its contract does not allow. */
export class FuzzFailure extends Error {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "FuzzFailure";
  }
}

export interface TypedErrorRule {
  /** The codes this parser documents. */
  codes: readonly string[];
  /**
   * Messages of HrErrors that merely wrap a crash (a catch-all turning a TypeError or RangeError
   * into a typed error): the parser contract holds, but a bug is hiding behind it.
   */
  maskedCrash?: RegExp;
}

/** The code of a typed error the rule allows; a FuzzFailure for anything else. */
export function typedOutcome(error: unknown, rule: TypedErrorRule): Outcome {
  if (error instanceof FuzzFailure) throw error;
  if (!(error instanceof HrError)) {
    const kind = error instanceof Error ? error.name : typeof error;
    throw new FuzzFailure(`untyped ${kind} escaped the parser: ${messageOf(error)}`, { cause: error });
  }
  if (!rule.codes.includes(error.code)) {
    throw new FuzzFailure(`undocumented error code ${error.code}: ${error.message}`, { cause: error });
  }
  if (rule.maskedCrash?.test(error.message) === true) {
    throw new FuzzFailure(`a crash wrapped as ${error.code}: ${error.message}`, { cause: error });
  }
  return error.code;
}

/** Asserts inside a run (invariants of what a parser returned). */
export function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new FuzzFailure(message);
}

/** Counts outcomes: how many inputs parsed, and how many ended in each typed error code. */
export class OutcomeStats {
  runs = 0;
  readonly byOutcome = new Map<Outcome, number>();
  slowestMs = 0;

  add(outcome: Outcome, ms: number): void {
    this.runs += 1;
    this.byOutcome.set(outcome, (this.byOutcome.get(outcome) ?? 0) + 1);
    this.slowestMs = Math.max(this.slowestMs, ms);
  }

  get successes(): number {
    return this.byOutcome.get(OK) ?? 0;
  }

  get typedErrors(): number {
    return this.runs - this.successes;
  }

  /** "MIGRATION_BAD_STREAM 812, MIGRATION_TRUNCATED 97", most frequent first. */
  codes(): string {
    return [...this.byOutcome]
      .filter(([outcome]) => outcome !== OK)
      .sort((a, b) => b[1] - a[1])
      .map(([code, count]) => `${code} ${count}`)
      .join(", ");
  }
}

/** One input through a target, with the hang and allocation checks. */
export function guardedRun(target: FuzzTarget, input: unknown, stats?: OutcomeStats): Outcome {
  const before = process.memoryUsage().arrayBuffers;
  const started = process.cpuUsage();
  const outcome = target.run(input);
  const spent = process.cpuUsage(started);
  const ms = (spent.user + spent.system) / 1000;
  const grown = process.memoryUsage().arrayBuffers - before;
  if (ms > MAX_RUN_MS) {
    throw new FuzzFailure(`${target.name}: one input took ${Math.round(ms)} ms of CPU (a hang?)`);
  }
  if (grown > MAX_ALLOCATION_BYTES) {
    throw new FuzzFailure(`${target.name}: one input grew ArrayBuffer memory by ${grown} bytes`);
  }
  stats?.add(outcome, ms);
  return outcome;
}

/** `inputs` defaults to the target's usual mix; pass `target.hugeLengths` for the length pass. */
export function fuzzProperty(
  target: FuzzTarget,
  stats?: OutcomeStats,
  inputs: fc.Arbitrary<unknown> = target.arbitrary,
): fc.IPropertyWithHooks<[unknown]> {
  return fc.property(inputs, (input) => {
    guardedRun(target, input, stats);
  });
}

/** True when `work` throws exactly `error` (a failed push parser stays failed). */
export function throwsSame(work: () => unknown, error: unknown): boolean {
  try {
    work();
    return false;
  } catch (again) {
    return again === error;
  }
}

/** A fixed seed per target name (FNV-1a), so a short run always replays the same inputs. */
export function seedOf(name: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i += 1) hash = Math.imul(hash ^ name.charCodeAt(i), 0x01000193);
  return hash | 0;
}
