import type { Vm } from "../../vm/vm.ts";

/**
 * Brings a restored guest's wall clock to the host's (DESIGN.md §8): the guest's clock continues
 * from the snapshot and lags by the time since the cut, which breaks applications that compare
 * wall-clock times across machines. One exec of `hr-clock set` through the agent (each exec costs
 * a freshly restored guest a fork and an exec); the value sent is the host's time when the command
 * leaves plus ONE_WAY_MS, the typical delay of an agent command to run in a TCG guest. Returns the
 * lag found, ms (host − guest, before the correction).
 */
const ONE_WAY_MS = 15;

export async function syncGuestClock(vm: Pick<Vm, "exec" | "spec">): Promise<number> {
  const oneWayMs = ONE_WAY_MS;
  const hostNow = Date.now();
  const result = await vm.exec(`hr-clock set ${Math.round(hostNow + oneWayMs)}`, 10_000);
  if (result.exitCode !== 0) throw new Error(`hr-clock set failed: ${result.stderr.toString("utf8").trim()}`);
  const before = Number(result.stdout.toString("utf8").trim());
  if (!Number.isFinite(before)) throw new Error("hr-clock set printed no previous time");
  return Math.round(hostNow + oneWayMs - before);
}
