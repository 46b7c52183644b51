import { median } from "../metrics/stats.ts";
import { COMPARED_CONFIGS, compareRow, type CompareRow } from "../sim/compare.ts";
import { randomCluster } from "../sim/random.ts";
import { simulateRestore } from "../sim/simulate.ts";

/**
 * Scale suite (no VMs): the discrete-event restore simulator (src/sim) on random clusters of 10 to
 * 10,000 VMs (2 data flows sent per VM on average, a fifth of connections with data both ways,
 * ready after 150–3000 ms in proportion to memory), under every compared order and hold setting.
 * Per size and configuration: cluster restore latency (latest start), median start, the moment
 * every flow has progressed, max and median TCP backoff, retransmissions, flows that saw a drop,
 * and the wall time of the simulation itself. Values are medians over
 * `seeds` random clusters per size (seed = size × 1000 + i); one untimed warm-up run first (JIT).
 */
export interface ScaleRow extends CompareRow {
  vms: number;
  flows: number;
  simMs: number;
  seeds: number;
}

export interface ScaleOptions {
  sizes?: number[];
  /** Random clusters per size. Default 1. */
  seeds?: number;
  out: (line: string) => void;
}

const SIZES = [10, 100, 1_000, 10_000];
const AVG_DEGREE = 2;
const CYCLES = 0.2;

const round = (value: number): number => Math.round(value * 100) / 100;

const COLUMNS: [title: string, width: number][] = [
  ["vms", 6],
  ["order", 13],
  ["hold", 5],
  ["latencyMs", 10],
  ["medStartMs", 11],
  ["lastProgMs", 11],
  ["maxBackoffMs", 13],
  ["medBackoffMs", 13],
  ["retrans", 8],
  ["dropFlows", 10],
  ["simMs", 9],
];

function line(cells: (string | number)[]): string {
  return cells.map((cell, index) => String(cell).padStart(COLUMNS[index]?.[1] ?? 8)).join(" ");
}

function formatRow(row: ScaleRow): string {
  return line([
    row.vms,
    row.order,
    row.hold ? "on" : "off",
    round(row.clusterLatencyMs),
    round(row.medianStartMs),
    round(row.lastProgressMs),
    round(row.maxBackoffMs),
    round(row.medianBackoffMs),
    row.retransmissions,
    row.flowsWithDrop,
    round(row.simMs),
  ]);
}

/** Medians over the seeds' rows of one size and configuration. */
function medianRow(vms: number, runs: { row: CompareRow; flows: number; simMs: number }[]): ScaleRow {
  const first = runs[0];
  if (first === undefined) throw new RangeError("no runs to summarize");
  const of = (pick: (run: { row: CompareRow; flows: number; simMs: number }) => number): number =>
    round(median(runs.map(pick)));
  return {
    vms,
    flows: of((run) => run.flows),
    order: first.row.order,
    hold: first.row.hold,
    clusterLatencyMs: of((run) => run.row.clusterLatencyMs),
    medianStartMs: of((run) => run.row.medianStartMs),
    lastProgressMs: of((run) => run.row.lastProgressMs),
    maxBackoffMs: of((run) => run.row.maxBackoffMs),
    medianBackoffMs: of((run) => run.row.medianBackoffMs),
    retransmissions: of((run) => run.row.retransmissions),
    flowsWithDrop: of((run) => run.row.flowsWithDrop),
    heldFrames: of((run) => run.row.heldFrames),
    simMs: of((run) => run.simMs),
    seeds: runs.length,
  };
}

export function runScale(options: ScaleOptions): Promise<ScaleRow[]> {
  const sizes = options.sizes ?? SIZES;
  const seeds = Math.max(1, options.seeds ?? 1);
  const warmUp = randomCluster(1, { vms: 100, avgDegree: AVG_DEGREE, cycles: CYCLES });
  for (const { order, hold } of COMPARED_CONFIGS) simulateRestore({ ...warmUp, order, hold });

  options.out(line(COLUMNS.map(([title]) => title)));
  const rows: ScaleRow[] = [];
  for (const size of sizes) {
    const clusters = Array.from({ length: seeds }, (_, index) =>
      randomCluster(size * 1000 + index, { vms: size, avgDegree: AVG_DEGREE, cycles: CYCLES }),
    );
    for (const { order, hold } of COMPARED_CONFIGS) {
      const runs = clusters.map((cluster) => {
        const started = performance.now();
        const result = simulateRestore({ vms: cluster.vms, flows: cluster.flows, order, hold });
        const simMs = performance.now() - started;
        return { row: compareRow(result), flows: cluster.flows.length, simMs };
      });
      const row = medianRow(size, runs);
      rows.push(row);
      options.out(formatRow(row));
    }
  }
  return Promise.resolve(rows);
}
