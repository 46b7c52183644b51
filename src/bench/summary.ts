/**
 * Benchmark summaries: rows grouped by what was compared (e.g. memory size + strategy), each
 * metric as median, min, max and count over the repetitions, and the ratio of each group's median
 * to the baseline group's median in the same run (e.g. hotrestore latency / full latency).
 */
import { median } from "../metrics/stats.ts";

export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export type SummaryRow = Record<string, string | number | boolean | Spread | null>;

export interface SummaryOptions<Row> {
  /** Fields that identify a group (their values are copied into the summary row). */
  by: (keyof Row & string)[];
  /** Numeric fields summarized as Spread (null values are left out; all null → null). */
  metrics: (keyof Row & string)[];
  /**
   * The baseline of each group: rows whose `field` equals `value`, within the same values of
   * `within` (e.g. same memory size). Ratios `<metric>VsBaseline` = group median / baseline median.
   */
  baseline?: { match: Partial<Record<keyof Row & string, unknown>>; within: (keyof Row & string)[] };
}

export function spread(values: readonly number[]): Spread | null {
  if (values.length === 0) return null;
  return {
    median: round(median(values)),
    min: round(Math.min(...values)),
    max: round(Math.max(...values)),
    n: values.length,
  };
}

function round(value: number): number {
  return Math.abs(value) >= 10 ? Math.round(value * 10) / 10 : Math.round(value * 1000) / 1000;
}

function numbers<Row>(rows: readonly Row[], metric: keyof Row): number[] {
  return rows.flatMap((row) => {
    const value = row[metric];
    return typeof value === "number" && Number.isFinite(value) ? [value] : [];
  });
}

export function summarize<Row extends object>(
  rows: readonly Row[],
  options: SummaryOptions<Row>,
): SummaryRow[] {
  const groups = new Map<string, Row[]>();
  for (const row of rows) {
    const key = JSON.stringify(options.by.map((field) => row[field]));
    const list = groups.get(key) ?? [];
    list.push(row);
    groups.set(key, list);
  }
  const out: SummaryRow[] = [];
  for (const members of groups.values()) {
    const first = members[0] as Row;
    const summary: SummaryRow = {};
    for (const field of options.by) summary[field] = first[field] as SummaryRow[string];
    summary.reps = members.length;
    for (const metric of options.metrics) summary[metric] = spread(numbers(members, metric));
    const base = options.baseline;
    if (base) {
      const baseline = rows.filter(
        (row) =>
          Object.entries(base.match).every(([field, value]) => row[field as keyof Row] === value) &&
          base.within.every((field) => row[field] === first[field]),
      );
      for (const metric of options.metrics) {
        const ours = spread(numbers(members, metric));
        const theirs = spread(numbers(baseline, metric));
        summary[`${metric}VsBaseline`] =
          ours && theirs && theirs.median !== 0 ? round(ours.median / theirs.median) : null;
      }
    }
    out.push(summary);
  }
  return out;
}
