/**
 * The long fuzz run (`npm run fuzz`): every target of test/fuzz/targets.ts with at least 100,000
 * inputs, then its huge-length inputs (a tenth as many). Prints, per pass, the runs, how many
 * inputs parsed and how many ended in each typed error, the slowest input, and the time; on a
 * failure, fast-check's report (seed, path and shrunk counterexample) and the error.
 *
 *   npm run fuzz -- [--runs N] [--target NAME]... [--seed N]
 *   npm run fuzz -- --target NAME --seed N --path P [--huge]    replays one failure
 *
 * Exit status 1 on any failure, 2 on bad arguments.
 */
import { parseArgs } from "node:util";
import fc from "fast-check";
import { fuzzProperty, OutcomeStats, type FuzzTarget } from "../test/fuzz/harness.ts";
import { findTarget, TARGETS } from "../test/fuzz/targets.ts";

const DEFAULT_RUNS = 100_000;
/** The counterexample of a stream is long; seed and path replay it exactly. */
const MAX_REPORT = 4000;
const USAGE = "usage: npm run fuzz -- [--runs N] [--target NAME]... [--seed N] [--path P [--huge]]";

interface Pass {
  target: FuzzTarget;
  label: string;
  inputs: fc.Arbitrary<unknown>;
  runs: number;
}

function usage(message: string): never {
  console.error(`fuzz: ${message}`);
  console.error(USAGE);
  console.error("targets:");
  for (const target of TARGETS) console.error(`  ${target.name}: ${target.about}`);
  process.exit(2);
}

function integer(text: string | undefined, what: string, fallback: number, min: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < min) usage(`${what} must be an integer >= ${min}, got ${text}`);
  return value;
}

function mainPass(target: FuzzTarget, runs: number): Pass {
  return { target, label: target.name, inputs: target.arbitrary, runs };
}

function hugePass(target: FuzzTarget, runs: number): Pass[] {
  if (target.hugeLengths === undefined) return [];
  const label = `${target.name} (huge lengths)`;
  return [{ target, label, inputs: target.hugeLengths, runs: Math.max(1, Math.round(runs / 10)) }];
}

function stackOf(error: unknown): string {
  return error instanceof Error ? (error.stack ?? error.message) : String(error);
}

function runPass(pass: Pass, seed: number, path: string | undefined): boolean {
  const stats = new OutcomeStats();
  const started = performance.now();
  const property = fuzzProperty(pass.target, stats, pass.inputs);
  const details = fc.check(property, path === undefined ? { numRuns: pass.runs, seed } : { seed, path });
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const codes = stats.codes();
  console.log(
    `${pass.label}: ${details.numRuns} runs, ${stats.successes} parsed, ${stats.typedErrors} typed errors` +
      `${codes === "" ? "" : ` (${codes})`}, slowest ${stats.slowestMs.toFixed(1)} ms CPU, ${seconds} s`,
  );
  if (!details.failed) return true;
  const report = fc.defaultReportMessage(details) ?? "failed (no report)";
  console.log(report.length > MAX_REPORT ? `${report.slice(0, MAX_REPORT)}… (report cut)` : report);
  console.log(`error: ${stackOf(details.errorInstance)}`);
  const cause = details.errorInstance instanceof Error ? details.errorInstance.cause : undefined;
  if (cause !== undefined) console.log(`cause: ${stackOf(cause)}`);
  return false;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      runs: { type: "string" },
      target: { type: "string", multiple: true },
      seed: { type: "string" },
      path: { type: "string" },
      huge: { type: "boolean" },
    },
    strict: true,
  });
  const runs = integer(values.runs, "--runs", DEFAULT_RUNS, 1);
  const names = values.target ?? [];
  const targets =
    names.length === 0 ? TARGETS : names.map((name) => findTarget(name) ?? usage(`no target ${name}`));
  const seed = integer(values.seed, "--seed", Date.now() | 0, -(2 ** 31));
  const path = values.path;
  if (path !== undefined && (targets.length !== 1 || values.seed === undefined)) {
    usage("--path replays one failure: give exactly one --target and its --seed");
  }
  const passes = targets.flatMap((target) => {
    if (path === undefined) return [mainPass(target, runs), ...hugePass(target, runs)];
    return values.huge === true ? hugePass(target, runs) : [mainPass(target, runs)];
  });
  console.log(
    `fuzz: seed ${seed}, ${path === undefined ? `${runs} runs per target` : `replaying path ${path}`}`,
  );
  let failed = 0;
  for (const pass of passes) if (!runPass(pass, seed, path)) failed += 1;
  if (failed > 0) {
    console.log(`fuzz: ${failed} failed`);
    process.exit(1);
  }
  console.log("fuzz: no failures");
}

main();
