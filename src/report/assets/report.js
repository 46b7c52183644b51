/* global uPlot, document, window, renderBench */
/**
 * Draws a HotRestore report from the JSON island #hr-data (see src/report/model.ts) with uPlot.
 * Plain browser script, inlined by src/report/html.ts; no network access.
 */
"use strict";

const DATA = JSON.parse(document.getElementById("hr-data").textContent);
const ROOT = document.getElementById("report");
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const STRATEGY_COLORS = {
  full: "#7f7f7f",
  mmap: "#9467bd",
  lazy: "#ff7f0e",
  workingset: "#17becf",
  hotrestore: "#d62728",
  "hotrestore-refined": "#8b0000",
};
const PHASES = [
  { name: "loading before start", color: "#f0a35e" },
  { name: "ready, held by the order", color: "#c8c8c8" },
  { name: "running, memory still loading", color: "#5b9bd5" },
  { name: "running, all memory in", color: "#58b368" },
];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
  }
  return node;
}

function fmt(value, unit) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    const text =
      Math.abs(value) >= 100 || Number.isInteger(value)
        ? Math.round(value).toLocaleString("en")
        : value.toFixed(2);
    return unit ? `${text} ${unit}` : text;
  }
  return String(value);
}

function mib(bytes) {
  return bytes === null || bytes === undefined ? "–" : `${(bytes / 1048576).toFixed(1)} MiB`;
}

function table(headers, rows, className) {
  return el(
    "table",
    { class: className ?? "figures" },
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        headers.map((h) => el("th", {}, h)),
      ),
    ),
    el(
      "tbody",
      {},
      rows.map((row) =>
        el(
          "tr",
          {},
          row.map((cell) => el("td", {}, cell)),
        ),
      ),
    ),
  );
}

function legend(items) {
  return el(
    "div",
    { class: "legend" },
    items.map((item) =>
      el("span", { class: "key" }, el("i", { style: `background:${item.color}` }), item.name),
    ),
  );
}

function chartWidth(container) {
  return Math.max(360, Math.min(1100, (container.clientWidth || ROOT.clientWidth || 900) - 8));
}

function plot(container, opts, data) {
  const box = el("div", { class: "chart" });
  container.append(box);
  return new uPlot({ width: chartWidth(container), height: 260, ...opts }, data, box);
}

/** Every distinct x of a set of lists, sorted. */
function xsOf(lists) {
  return [...new Set(lists.flat().filter((x) => x !== null && x !== undefined))].sort((a, b) => a - b);
}

const msAxis = { label: "ms after the restore command", values: (u, splits) => splits.map((s) => `${s}`) };

// ---------------------------------------------------------------- cluster report

function runSummary(runs) {
  const headers = [
    "strategy",
    "order",
    "hold",
    "cluster restore latency",
    "max ttr",
    "backoff max / median",
    "retransmits",
    "dropped",
    "bytes before start",
  ];
  const rows = runs.map((run) => {
    const r = run.report;
    const ttrs = r.vms.map((vm) => vm.ttrMs).filter((v) => v !== null);
    return [
      r.strategy,
      r.order,
      r.hold ? "yes" : "no",
      fmt(r.restoreLatencyMs, "ms"),
      ttrs.length ? fmt(Math.max(...ttrs), "ms") : "–",
      `${fmt(r.backoff.maxMs)} / ${fmt(r.backoff.medianMs)} ms`,
      fmt(r.retransmits),
      fmt(r.droppedFrames),
      mib(r.vms.reduce((sum, vm) => sum + vm.bytesBeforeStart, 0)),
    ];
  });
  return table(headers, rows);
}

function timelineChart(container, run) {
  const vms = run.report.vms;
  const endOf = (vm) => Math.max(vm.startedMs, vm.backgroundDoneMs ?? 0, vm.ttrMs ?? 0);
  const end = Math.ceil(Math.max(...vms.map(endOf)) * 1.05 + 50);
  const spans = vms.map((vm) => {
    const done = vm.backgroundDoneMs ?? vm.startedMs;
    return [
      [0, vm.readyMs],
      [vm.readyMs, vm.startedMs],
      [vm.startedMs, Math.max(done, vm.startedMs)],
      [Math.max(done, vm.startedMs), end],
    ];
  });
  const xs = xsOf([...spans.flat(2), ...vms.map((vm) => vm.ttrMs)]);
  const series = [{}];
  const data = [xs];
  vms.forEach((vm, lane) => {
    PHASES.forEach((phase, p) => {
      const [from, to] = spans[lane][p];
      series.push({
        label: `${vm.name}: ${phase.name}`,
        stroke: phase.color,
        width: 12,
        points: { show: false },
        spanGaps: false,
      });
      data.push(xs.map((x) => (to > from && x >= from && x <= to ? lane : null)));
    });
  });
  series.push({
    label: "responsive (ttr)",
    stroke: "#000",
    fill: "#ffd400",
    width: 0,
    paths: () => null,
    points: { show: true, size: 11, width: 2, stroke: "#000", fill: "#ffd400" },
  });
  data.push(
    xs.map((x) => {
      const lane = vms.findIndex((vm) => vm.ttrMs === x);
      return lane >= 0 ? lane : null;
    }),
  );
  plot(
    container,
    {
      height: 50 + 40 * vms.length,
      legend: { show: false },
      scales: { x: { time: false }, y: { range: [-0.6, vms.length - 0.4] } },
      axes: [
        msAxis,
        {
          splits: () => vms.map((_, i) => i),
          values: (u, splits) => splits.map((s) => vms[s]?.name ?? ""),
          size: 70,
        },
      ],
      series,
    },
    data,
  );
  container.append(legend([...PHASES, { name: "responsive (ttr)", color: "#ffd400" }]));
}

function perVmSeriesChart(container, run, pick, opts) {
  const vms = run.report.vms.filter((vm) => pick(vm) !== null && pick(vm).length > 0);
  if (vms.length === 0) {
    container.append(el("p", { class: "note" }, opts.none));
    return;
  }
  const xs = xsOf(vms.map((vm) => pick(vm).map((p) => p[0])));
  const series = [{}];
  const data = [xs];
  vms.forEach((vm) => {
    const index = run.report.vms.indexOf(vm);
    const byX = new Map(pick(vm).map((p) => [p[0], p[1]]));
    series.push({
      label: vm.name,
      stroke: PALETTE[index % PALETTE.length],
      width: 2,
      spanGaps: true,
      paths: uPlot.paths.stepped({ align: 1 }),
      points: { show: false },
    });
    data.push(xs.map((x) => (byX.has(x) ? byX.get(x) : null)));
  });
  plot(
    container,
    {
      height: 220,
      scales: { x: { time: false } },
      axes: [msAxis, { label: opts.yLabel, size: 60 }],
      series,
    },
    data,
  );
}

function flowChart(container, run) {
  const r = run.report;
  const flows = r.backoff.flows;
  if (flows.length === 0) {
    container.append(el("p", { class: "note" }, "No TCP flow was active at the cut."));
    return;
  }
  const started = Object.fromEntries(r.vms.map((vm) => [vm.name, vm.startedMs]));
  const kinds = [
    { kind: "both", name: "both ends running", color: "#000" },
    { kind: "progress", name: "new data", color: "#2ca02c" },
    { kind: "retransmit", name: "retransmission", color: "#d62728" },
    { kind: "other", name: "ACK / other", color: "#9e9e9e" },
  ];
  const points = flows.map((flow) => ({
    both: [Math.max(started[flow.from] ?? 0, started[flow.to] ?? 0)],
    progress: flow.segments.filter((s) => s.kind === "progress").map((s) => s.atMs),
    retransmit: flow.segments.filter((s) => s.kind === "retransmit").map((s) => s.atMs),
    other: flow.segments.filter((s) => s.kind === "other").map((s) => s.atMs),
  }));
  const xs = xsOf(points.flatMap((p) => [p.both, p.progress, p.retransmit, p.other]));
  const series = [{}];
  const data = [xs];
  flows.forEach((flow, lane) => {
    for (const k of kinds) {
      const at = new Set(points[lane][k.kind]);
      series.push({
        label: `${flow.from}→${flow.to} ${k.name}`,
        stroke: k.color,
        fill: k.color,
        paths: () => null,
        points: { show: true, size: k.kind === "both" ? 14 : 7, fill: k.color, stroke: k.color },
      });
      data.push(xs.map((x) => (at.has(x) ? lane : null)));
    }
  });
  plot(
    container,
    {
      height: 60 + 34 * flows.length,
      legend: { show: false },
      scales: { x: { time: false }, y: { range: [-0.6, flows.length - 0.4] } },
      axes: [
        msAxis,
        {
          splits: () => flows.map((_, i) => i),
          values: (u, splits) =>
            splits.map((s) => {
              const flow = flows[s];
              return flow ? `${flow.from}→${flow.to} ${fmt(flow.ms)} ms` : "";
            }),
          size: 150,
        },
      ],
      series,
    },
    data,
  );
  container.append(legend(kinds.map((k) => ({ name: k.name, color: k.color }))));
}

function runDetails(container, run) {
  container.replaceChildren();
  const r = run.report;
  container.append(
    el("h3", {}, `Restore timeline per VM — ${run.label}`),
    el(
      "p",
      { class: "note" },
      "Each lane is one VM: loading before it may start, waiting for the order to start it, running while the rest of its memory streams in, then running with all of it. The yellow dot is its time to responsiveness.",
    ),
  );
  timelineChart(container, run);
  container.append(el("h3", {}, "Window size (hotrestore) and faults per 100 ms"));
  perVmSeriesChart(container, run, (vm) => (vm.window ? vm.window.map((w) => [w.atMs, w.pages]) : null), {
    yLabel: "window (pages)",
    none: `No elastic window in this run (strategy ${r.strategy}).`,
  });
  perVmSeriesChart(
    container,
    run,
    (vm) => (vm.faultsPer100ms ? vm.faultsPer100ms.map((count, i) => [i * 100, count]) : null),
    {
      yLabel: "faults / 100 ms",
      none: `No on-demand faults in this run (strategy ${r.strategy} loads everything before start).`,
    },
  );
  container.append(el("h3", {}, "TCP activity per flow around the restore"));
  flowChart(container, run);
  container.append(
    el("h3", {}, "Per-VM figures"),
    table(
      [
        "VM",
        "ready",
        "started",
        "ttr (basis)",
        "background done",
        "W0",
        "before / after start",
        "faults",
        "fault p50 / p99",
        "recall",
      ],
      r.vms.map((vm) => [
        vm.name,
        fmt(vm.readyMs, "ms"),
        fmt(vm.startedMs, "ms"),
        `${fmt(vm.ttrMs, "ms")} (${vm.ttrBasis ?? "–"})`,
        fmt(vm.backgroundDoneMs, "ms"),
        fmt(vm.w0Pages),
        `${mib(vm.bytesBeforeStart)} / ${mib(vm.bytesAfterStart)}`,
        fmt(vm.faults),
        vm.faultServiceUs ? `${fmt(vm.faultServiceUs.p50)} / ${fmt(vm.faultServiceUs.p99)} µs` : "–",
        vm.workingSet && vm.workingSet.recall !== null ? vm.workingSet.recall.toFixed(2) : "–",
      ]),
    ),
  );
}

function flowComparison(container, runs) {
  const baseline =
    runs.find((run) => run.report.order === "as-ready" && run.report.strategy === "full") ??
    runs.find((run) => run.report.order === "as-ready");
  const line =
    runs.find((run) => run.report.order === "restore-line" && run.report.strategy === "hotrestore") ??
    runs.find((run) => run.report.order === "restore-line");
  if (!baseline || !line) return;
  container.append(
    el("h2", {}, "Backoff: naive start order vs the restore line"),
    el(
      "p",
      { class: "note" },
      "Black: the moment both ends of the flow run again. Green: new data. Red: a retransmission. The gap from black to the first green is the flow's backoff.",
    ),
  );
  const grid = el("div", { class: "pair" });
  container.append(grid);
  for (const run of [baseline, line]) {
    const cell = el("div", {}, el("h3", {}, run.label));
    grid.append(cell);
    flowChart(cell, run);
  }
}

function latencyVsMemory(container, points, yLabel) {
  // points: [{strategy, memoryMiB, ms}]
  const strategies = [...new Set(points.map((p) => p.strategy))];
  const xs = xsOf([points.map((p) => p.memoryMiB)]);
  const series = [{}];
  const data = [xs];
  for (const strategy of strategies) {
    series.push({
      label: strategy,
      stroke: STRATEGY_COLORS[strategy] ?? "#333",
      width: 2,
      spanGaps: true,
      points: { show: true, size: 8 },
    });
    data.push(
      xs.map((x) => {
        const values = points.filter((p) => p.strategy === strategy && p.memoryMiB === x).map((p) => p.ms);
        if (values.length === 0) return null;
        values.sort((a, b) => a - b);
        return values[Math.floor((values.length - 1) / 2)];
      }),
    );
  }
  plot(
    container,
    {
      height: 280,
      scales: { x: { time: false } },
      axes: [{ label: "VM memory (MiB)" }, { label: yLabel, size: 70 }],
      series,
    },
    data,
  );
}

function graphView(plan) {
  const edges = plan.graph.edges;
  const groups = plan.line.order.map((members) =>
    el(
      "div",
      { class: "group" },
      el("div", { class: "when" }, `start at ${fmt(plan.line.startMs[members[0]] ?? 0)} ms (planned)`),
      members.map((vm) =>
        el(
          "div",
          { class: "node" },
          el("b", {}, vm),
          el("span", {}, ` W0 ${fmt(plan.line.w0[vm] ?? 0)} pages`),
          el(
            "div",
            { class: "edges" },
            edges.filter((e) => e.from === vm).map((e) => el("div", {}, `sends → ${e.to} (${mib(e.bytes)})`)),
          ),
        ),
      ),
    ),
  );
  const components = plan.graph.components.filter((c) => c.length > 1).map((c) => c.join(" ⇄ "));
  return el(
    "div",
    {},
    el(
      "p",
      { class: "note" },
      "Edges point from the sender of data to its receiver (from the traffic before the cut and the frames in flight at it). The restore line starts receivers no later than their senders and the members of a cycle together; groups are listed in start order.",
    ),
    components.length ? el("p", {}, `Cycles (started together): ${components.join("; ")}`) : null,
    el("div", { class: "line" }, groups),
  );
}

function definitions(list) {
  return table(
    ["figure", "definition"],
    list.map((d) => [d.figure, d.definition]),
    "definitions",
  );
}

function renderCluster() {
  const d = DATA;
  ROOT.replaceChildren(
    el("h1", {}, d.title),
    el(
      "p",
      { class: "meta" },
      `Generated ${d.generatedAt} · ${d.host.cpus} CPUs · Node ${d.host.node} · accel ${d.host.accel} · snapshot ${d.snapshot.name} (pause ${fmt(d.snapshot.pauseMs)} ms, ${mib(d.snapshot.storedBytes)} stored) · VMs: ${d.vms.map((vm) => `${vm.name} ${vm.memoryMiB} MiB`).join(", ")}`,
    ),
    el("h2", {}, "Every restore of the snapshot"),
    runSummary(d.runs),
  );
  flowComparison(ROOT, d.runs);
  ROOT.append(el("h2", {}, "Restore latency vs memory size"));
  ROOT.append(
    el(
      "p",
      { class: "note" },
      "Per VM: restore command → ready to run (median over the runs of each strategy). Full restores grow with memory; the lazy strategies load only device state and a working set before start.",
    ),
  );
  const memory = Object.fromEntries(d.vms.map((vm) => [vm.name, vm.memoryMiB]));
  latencyVsMemory(
    ROOT,
    d.runs.flatMap((run) =>
      run.report.vms.map((vm) => ({
        strategy: run.report.strategy,
        memoryMiB: memory[vm.name],
        ms: vm.readyMs,
      })),
    ),
    "ms to ready",
  );
  ROOT.append(el("h2", {}, "Dependency graph and restore line"), graphView(d.plan));
  const select = el(
    "select",
    { id: "run-select" },
    d.runs.map((run, i) => el("option", { value: String(i) }, run.label)),
  );
  const details = el("div", { id: "run-details" });
  select.addEventListener("change", () => runDetails(details, d.runs[Number(select.value)]));
  ROOT.append(el("h2", {}, "One restore in detail ", select), details);
  const preferred = d.runs.findIndex(
    (run) => run.report.strategy === "hotrestore" && run.report.order === "restore-line",
  );
  select.value = String(preferred >= 0 ? preferred : 0);
  runDetails(details, d.runs[Number(select.value)]);
  ROOT.append(el("h2", {}, "Definitions"), definitions(d.definitions));
}

try {
  if (DATA.kind === "cluster") renderCluster();
  else renderBench();
  document.body.dataset.rendered = "yes";
} catch (error) {
  ROOT.append(
    el(
      "pre",
      { class: "error" },
      `The report could not be drawn: ${error && error.stack ? error.stack : error}`,
    ),
  );
  document.body.dataset.rendered = "error";
}
window.hrReport = DATA;
