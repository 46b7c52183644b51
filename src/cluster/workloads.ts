import type { VmSpec, Workload } from "../spec/schema.ts";

/**
 * The guest-side commands that start the built-in workloads. Pure. The command strings run in
 * the guest's busybox sh through our agent; user text is single-quoted for that shell.
 * Each workload writes one line of JSON stats to a file under STATS_DIR in the guest.
 */
export const STATS_DIR = "/run/hr";

export interface WorkloadLaunch {
  /** The VM the command runs on. */
  vm: string;
  /** Stable id, also the stats file's base name. */
  id: string;
  kind: Workload["kind"] | "tcp-sink";
  command: string;
}

/** Quotes a string for a POSIX shell (the guest's busybox sh). */
export function shQuote(text: string): string {
  return `'${text.replaceAll("'", `'\\''`)}'`;
}

function statsFile(id: string): string {
  return `${STATS_DIR}/${id}.json`;
}

/** Every workload of the cluster in start order: sinks first, so senders find a listener. */
export function workloadLaunches(vms: readonly VmSpec[]): WorkloadLaunch[] {
  const sinks = new Map<string, WorkloadLaunch>();
  const others: WorkloadLaunch[] = [];
  for (const vm of vms) {
    vm.workloads.forEach((workload, index) => {
      switch (workload.kind) {
        case "command": {
          const id = `command-${index}`;
          others.push({
            vm: vm.name,
            id,
            kind: "command",
            command: `mkdir -p ${STATS_DIR}; cd /; exec sh -c ${shQuote(workload.run)} > ${STATS_DIR}/${id}.log 2>&1`,
          });
          break;
        }
        case "tcp-stream": {
          const sinkId = `stream-recv-${workload.port}`;
          const sinkKey = `${workload.to}/${workload.port}`;
          if (!sinks.has(sinkKey)) {
            sinks.set(sinkKey, {
              vm: workload.to,
              id: sinkId,
              kind: "tcp-sink",
              command: `mkdir -p ${STATS_DIR}; exec hr-stream recv ${workload.port} ${statsFile(sinkId)}`,
            });
          }
          const id = `stream-send-${workload.to}-${workload.port}`;
          others.push({
            vm: vm.name,
            id,
            kind: "tcp-stream",
            command: `mkdir -p ${STATS_DIR}; exec hr-stream send ${workload.to} ${workload.port} ${workload.rateKiBps} ${statsFile(id)}`,
          });
          break;
        }
        case "mem": {
          const id = `mem-${index}`;
          others.push({
            vm: vm.name,
            id,
            kind: "mem",
            command: `mkdir -p ${STATS_DIR}; exec hr-mem ${workload.mib} ${workload.hotPercent} ${statsFile(id)}${
              workload.touchesPerSec === undefined ? "" : ` ${workload.touchesPerSec}`
            }`,
          });
          break;
        }
      }
    });
  }
  return [...sinks.values(), ...others];
}

/** A guest command that prints every stats file as `id<TAB>json` lines. */
export const READ_STATS_COMMAND = `for f in ${STATS_DIR}/*.json; do [ -f "$f" ] && printf '%s\\t%s\\n' "$(basename "$f" .json)" "$(cat "$f")"; done; true`;

export function parseStats(output: string): Record<string, unknown> {
  const stats: Record<string, unknown> = {};
  for (const line of output.split("\n")) {
    const tab = line.indexOf("\t");
    if (tab <= 0) continue;
    try {
      stats[line.slice(0, tab)] = JSON.parse(line.slice(tab + 1)) as unknown;
    } catch {
      // a stats file caught mid-write is skipped; the next read has it
    }
  }
  return stats;
}
