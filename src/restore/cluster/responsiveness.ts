import { setTimeout as sleep } from "node:timers/promises";
import type { VmSpec } from "../../spec/schema.ts";
import { STATS_DIR } from "../../cluster/workloads.ts";
import { parseHistory, workloadTtr, type WorkloadTtr } from "../../metrics/ttr.ts";
import { messageOf } from "../../util/errors.ts";
import type { Vm } from "../../vm/vm.ts";

/**
 * Time to responsiveness of a restored VM's `mem` workload (metrics/ttr.ts has the definition).
 * Reads the guest's clock and the workload's rate history through the agent once the VM has run
 * for a while, and maps guest time to the restore's time: the guest clock at `cont` is the clock
 * read minus the host time elapsed since `cont` (error: half the exec's round trip, reported).
 */
export interface VmResponsiveness extends WorkloadTtr {
  /** Half the round trip of the clock read: the uncertainty of the mapping, ms. */
  clockErrorMs: number;
}

const FIRST_READ_AFTER_MS = 1500;
const READS = 4;
const READ_EVERY_MS = 1000;

export async function measureResponsiveness(
  vm: Pick<Vm, "exec">,
  spec: Pick<VmSpec, "workloads">,
  started: { hostAt: number; startedMs: number },
): Promise<VmResponsiveness | null> {
  const index = spec.workloads.findIndex((workload) => workload.kind === "mem");
  if (index < 0) return null;
  const wait = started.hostAt + FIRST_READ_AFTER_MS - performance.now();
  if (wait > 0) await sleep(wait);
  let last: VmResponsiveness | null = null;
  for (let read = 0; read < READS; read += 1) {
    if (read > 0) await sleep(READ_EVERY_MS);
    const before = performance.now();
    const result = await vm.exec(`cat /proc/uptime ${STATS_DIR}/mem-${index}.json.hist`, 10_000);
    const after = performance.now();
    const [uptimeLine, ...rest] = result.stdout.toString("utf8").split("\n");
    const uptimeS = Number((uptimeLine ?? "").split(" ")[0]);
    if (result.exitCode !== 0 || !Number.isFinite(uptimeS)) {
      throw new Error(
        `reading the mem workload's history failed: ${result.stderr.toString("utf8").trim() || "no output"}`,
      );
    }
    const sinceStartMs = (before + after) / 2 - started.hostAt;
    const cutGuestMs = uptimeS * 1000 - sinceStartMs;
    const ttr = workloadTtr({
      history: parseHistory(rest.join("\n")),
      cutGuestMs,
      startedMs: started.startedMs,
    });
    last = { ...ttr, clockErrorMs: Math.round((after - before) / 2) };
    if (ttr.ttrMs !== null) return last;
  }
  return last;
}

/** measureResponsiveness that never throws: a failed read is logged and gives null. */
export async function tryMeasureResponsiveness(
  vm: Pick<Vm, "exec">,
  spec: Pick<VmSpec, "workloads" | "name">,
  started: { hostAt: number; startedMs: number },
  warn: (message: string) => void,
): Promise<VmResponsiveness | null> {
  try {
    return await measureResponsiveness(vm, spec, started);
  } catch (error) {
    warn(`VM ${spec.name}: time to responsiveness not measured: ${messageOf(error)}`);
    return null;
  }
}
