import type { SnapshotInspection } from "../control/controller.ts";
import type { SnapshotPlan } from "../restore/cluster/plan.ts";
import type { RestoreReport } from "../restore/cluster/restore.ts";
import type { SnapshotReport } from "../snapshot/cut.ts";
import type { SnapshotListEntry } from "../snapshot/store/index.ts";
import { human, table } from "./format.ts";

export function formatSnapshotReport(report: SnapshotReport): string {
  const lines = [
    `snapshot ${report.name}: cluster paused ${report.pauseMs} ms, took ${(report.durationMs / 1000).toFixed(1)} s, ${human(report.storedBytes)} stored`,
    `  ${report.path}`,
    table([
      ["VM", "PAUSE", "SAVED", "MEMORY SAVED IN", "WORKING SET (PAGES)"],
      ...report.vms.map((vm) => [
        vm.name,
        `${vm.pauseMs} ms`,
        vm.saved === "stopped" ? "stopped (file-backed RAM)" : "live",
        `${vm.captureMs} ms`,
        String(vm.workingSetPages),
      ]),
    ]),
  ];
  return lines.join("\n");
}

export function listEntryJson(entry: SnapshotListEntry): unknown {
  if (entry.status !== "ok") return { name: entry.name, path: entry.path, damaged: true, error: entry.error };
  const s = entry.summary;
  return {
    name: s.name,
    path: s.path,
    createdAt: s.createdAt,
    vms: s.vms.map((vm) => vm.name),
    ramBytes: s.ramBytes,
    storedBytes: s.storedBytes,
    pauseMs: s.pauseMs,
  };
}

export function formatSnapshotList(entries: readonly SnapshotListEntry[]): string {
  if (entries.length === 0) return "no snapshots";
  return table([
    ["NAME", "CREATED", "VMS", "RAM", "ON DISK", "PAUSE"],
    ...entries.map((entry) =>
      entry.status === "ok"
        ? [
            entry.summary.name,
            entry.summary.createdAt,
            entry.summary.vms.map((vm) => vm.name).join(","),
            human(entry.summary.ramBytes),
            human(entry.summary.storedBytes),
            entry.summary.pauseMs === null ? "-" : `${entry.summary.pauseMs} ms`,
          ]
        : [entry.name, "DAMAGED", entry.error.message, "", "", ""],
    ),
  ]);
}

export function formatInspect(s: SnapshotInspection): string {
  const lines = [
    `snapshot ${s.name}  created ${s.createdAt}  pause ${s.pauseMs ?? "-"} ms  frames in flight ${s.inflightFrames}`,
    `  ${s.path}`,
    table([
      ["VM", "RAM", "STORED", "ZERO PAGES", "WORKING SET", "PAUSE"],
      ...s.vms.map((vm) => [
        vm.name,
        human(vm.ramBytes),
        human(vm.storedBytes),
        String(vm.zeroPages),
        String(vm.workingSetPages),
        vm.pauseMs === null ? "-" : `${vm.pauseMs} ms`,
      ]),
    ]),
  ];
  if (s.graph.edges.length > 0) {
    lines.push(
      "",
      "traffic graph",
      table([["FROM", "TO", "BYTES"], ...s.graph.edges.map((e) => [e.from, e.to, human(e.bytes)])]),
    );
  }
  return lines.join("\n");
}

export function formatRestoreReport(r: RestoreReport): string {
  return [
    `restored ${r.snapshot} (strategy ${r.strategy}, order ${r.order}, hold ${r.hold ? "on" : "off"}): every VM running after ${r.restoreLatencyMs} ms; ${r.inflightFrames} frames in flight ${r.hold ? "re-injected" : "lost"}`,
    `TCP backoff: max ${r.backoff.maxMs ?? "-"} ms, median ${r.backoff.medianMs ?? "-"} ms over ${r.backoff.flows.length} flows` +
      `${r.backoff.stalledFlows > 0 ? ` (${r.backoff.stalledFlows} made no progress)` : ""}; ${r.retransmits} retransmitted segments; ${r.droppedFrames} frames dropped`,
    table([
      [
        "VM",
        "READY AT",
        "STARTED AT",
        "RESPONSIVE AT",
        "BEFORE START",
        "AFTER START",
        "FAULTS",
        "FAULT p50/p99",
        "WS RECALL",
        "ALL IN AT",
      ],
      ...r.vms.map((vm) => [
        vm.name,
        `${vm.readyMs} ms`,
        `${vm.startedMs} ms`,
        vm.ttrMs === null ? "-" : `${vm.ttrMs} ms (${vm.ttrBasis ?? "?"})`,
        `${vm.pagesBeforeStart} pages (${human(vm.bytesBeforeStart)})`,
        `${vm.pagesAfterStart} pages`,
        String(vm.faults),
        vm.faultServiceUs
          ? `${Math.round(vm.faultServiceUs.p50)}/${Math.round(vm.faultServiceUs.p99)} us`
          : "-",
        vm.workingSet?.recall == null ? "-" : `${Math.round(vm.workingSet.recall * 100)}%`,
        vm.backgroundDoneMs === null ? "-" : `${vm.backgroundDoneMs} ms`,
      ]),
    ]),
  ].join("\n");
}

export function formatPlan(plan: SnapshotPlan): string {
  const lines = ["dependency graph (A -> B: A talks to B right after restore, so B starts no later than A)"];
  if (plan.graph.edges.length === 0) lines.push("  no edges: no VM talked to another before the cut");
  for (const edge of plan.graph.edges)
    lines.push(`  ${edge.from} -> ${edge.to}  (${edge.reason}, ${human(edge.bytes)})`);
  const together = plan.graph.components.filter((component) => component.length > 1);
  if (together.length > 0)
    lines.push(`start together: ${together.map((c) => `{${c.join(", ")}}`).join(" ")}`);
  lines.push("", "restore line");
  lines.push(
    table([
      ["VM", "START", "W0 PAGES", "SLACK"],
      ...plan.graph.nodes.map((vm) => [
        vm,
        `${Math.round(plan.line.startMs[vm] ?? 0)} ms`,
        String(plan.line.w0[vm] ?? 0),
        `${Math.round(plan.line.slackMs[vm] ?? 0)} ms`,
      ]),
    ]),
  );
  return lines.join("\n");
}
