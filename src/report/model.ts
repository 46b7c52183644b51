/**
 * What an HTML report shows, as data (timelines are data first, pictures second): the demo's
 * cluster report (every restore run of one snapshot) and a benchmark suite's results. The page's
 * script (assets/report.js; assets/report-bench.js for benchmarks) draws it with uPlot; `html.ts`
 * inlines them into one file.
 */
import type { RestoreReport } from "../restore/cluster/restore.ts";
import type { SnapshotPlan } from "../restore/cluster/plan.ts";

export interface RunRecord {
  /** Short label, e.g. "hotrestore / restore-line". */
  label: string;
  report: RestoreReport;
}

export interface ClusterReportData {
  kind: "cluster";
  title: string;
  generatedAt: string;
  host: { cpus: number; node: string; accel: string };
  vms: { name: string; memoryMiB: number }[];
  snapshot: { name: string; pauseMs: number; storedBytes: number };
  plan: Pick<SnapshotPlan, "graph" | "line">;
  runs: RunRecord[];
  definitions: Definition[];
}

export interface BenchReportData {
  kind: "bench";
  title: string;
  generatedAt: string;
  suite: string;
  host: Record<string, unknown>;
  results: unknown[];
  summary: unknown[];
  definitions: Definition[];
}

export type ReportData = ClusterReportData | BenchReportData;

export interface Definition {
  figure: string;
  definition: string;
}

/** Every figure the reports and the restore JSON show, with its definition. */
export const DEFINITIONS: Definition[] = [
  {
    figure: "cluster restore latency",
    definition: "restore command → every VM of the cluster running (its `cont` answered), ms",
  },
  {
    figure: "per-VM restore latency (ready)",
    definition:
      "restore command → the VM could start: its device state and the pages chosen before start are loaded (W0 for hotrestore, all memory for full), ms",
  },
  { figure: "started", definition: "restore command → the VM's `cont` (when the order let it run), ms" },
  {
    figure: "time to responsiveness (ttr)",
    definition:
      "restore command → the first 100 ms in which the guest's workload ran at ≥90% of its rate before the snapshot (basis `workload`); else the first 100 ms with fault stalls under 10% (`fault-stall`); else the start",
  },
  {
    figure: "background fill done",
    definition: "restore command → every page of the VM's memory delivered (lazy strategies), ms",
  },
  {
    figure: "W0",
    definition: "working-set pages a hotrestore VM loads before it starts (the restore line sets it)",
  },
  {
    figure: "window",
    definition:
      "hotrestore: how many working-set pages the page server keeps in flight ahead of the guest; doubles on a fault inside the working set, halves on one outside",
  },
  {
    figure: "faults per 100 ms",
    definition: "pages the guest asked for on demand after start (post-copy page requests)",
  },
  {
    figure: "fault service p50 / p99",
    definition: "page request received → page written to the destination, at the page server, µs",
  },
  {
    figure: "bytes before start",
    definition: "memory bytes loaded into the VMs before they started",
  },
  {
    figure: "TCP backoff (per flow)",
    definition:
      "both ends of a TCP flow running → the flow's first new data seen at the switch, ms; max and median over the flows active at the cut",
  },
  {
    figure: "retransmits",
    definition: "TCP segments seen at the switch during the restore that repeat sequence space already sent",
  },
  {
    figure: "dropped frames",
    definition: "frames to a VM not yet running that the switch dropped (baseline orders without hold)",
  },
  {
    figure: "working-set recall / waste",
    definition:
      "recall: share of the pages the guest faulted on after start that the working set predicted; waste: share of the working set it never touched",
  },
];
