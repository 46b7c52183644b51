/* global uPlot, DATA, ROOT, el, table, fmt, plot, latencyVsMemory, definitions */
/* exported renderBench */
/* The benchmark report's page (kind "bench"): html.ts inlines this file and report.js as one
 * script, so the helpers (el, table, fmt, plot, latencyVsMemory, definitions) and DATA/ROOT are
 * report.js's; renderBench is called from the dispatch at report.js's end. */
function genericTable(rows) {
  if (!rows || rows.length === 0) return el("p", { class: "note" }, "No rows.");
  const headers = [...new Set(rows.flatMap((row) => Object.keys(row)))];
  return table(
    headers,
    rows.map((row) =>
      headers.map((h) => {
        const value = row[h];
        if (value !== null && typeof value === "object") return JSON.stringify(value);
        return fmt(value);
      }),
    ),
  );
}

function renderBench() {
  const d = DATA;
  ROOT.replaceChildren(
    el("h1", {}, d.title),
    el("p", { class: "meta" }, `Suite ${d.suite} · started ${d.generatedAt} · ${JSON.stringify(d.host)}`),
  );
  if (d.suite === "restore") {
    ROOT.append(el("h2", {}, "Restore latency vs memory size"));
    latencyVsMemory(
      ROOT,
      d.results.map((row) => ({
        strategy: row.strategy,
        memoryMiB: row.memoryMiB,
        ms: row.restoreLatencyMs,
      })),
      "restore latency (ms)",
    );
    ROOT.append(el("h2", {}, "Time to responsiveness vs memory size"));
    latencyVsMemory(
      ROOT,
      d.results
        .filter((row) => row.ttrMs !== null)
        .map((row) => ({ strategy: row.run ?? row.strategy, memoryMiB: row.memoryMiB, ms: row.ttrMs })),
      "time to responsiveness (ms)",
    );
  }
  if (d.suite === "cluster" && d.summary.length > 0) {
    ROOT.append(el("h2", {}, "Cluster restore latency and max backoff per run (median)"));
    const labels = d.summary.map((row) => row.run);
    const xs = labels.map((_, i) => i);
    plot(
      ROOT,
      {
        height: 340,
        padding: [12, 110, 0, 0], // room for the last slanted label
        scales: { x: { time: false, range: [-0.5, labels.length - 0.5] } },
        axes: [
          // Run names are long ("hotrestore/restore-line no-hold"): slanted, or they overlap.
          {
            splits: () => xs,
            values: (u, splits) => splits.map((s) => labels[s] ?? ""),
            rotate: -30,
            size: 150,
            gap: 4,
          },
          { label: "ms", size: 70 },
        ],
        series: [
          {},
          {
            label: "restore latency",
            stroke: "#1f77b4",
            fill: "#1f77b455",
            paths: uPlot.paths.bars({ size: [0.35], align: -1 }),
          },
          {
            label: "max backoff",
            stroke: "#d62728",
            fill: "#d6272855",
            paths: uPlot.paths.bars({ size: [0.35], align: 1 }),
          },
        ],
      },
      [
        xs,
        d.summary.map((row) => row.restoreLatencyMs?.median ?? null),
        d.summary.map((row) => row.backoffMaxMs?.median ?? null),
      ],
    );
  }
  ROOT.append(
    el("h2", {}, "Summary: medians, spread and ratios over repetitions"),
    genericTable(flattenSummary(d.summary)),
  );
  ROOT.append(el("h2", {}, "Every measurement"), genericTable(d.results));
  if (d.definitions.length) ROOT.append(el("h2", {}, "Definitions"), definitions(d.definitions));
}

function flattenSummary(summary) {
  return summary.map((row) => {
    const out = {};
    for (const [key, value] of Object.entries(row)) {
      if (value && typeof value === "object" && "median" in value) {
        out[key] = `${fmt(value.median)} [${fmt(value.min)}–${fmt(value.max)}]`;
      } else out[key] = value;
    }
    return out;
  });
}
