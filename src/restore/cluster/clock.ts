import type { Vm } from "../../vm/vm.ts";

/**
 * Brings a restored guest's wall clock to the host's (DESIGN.md §8): the guest's clock continues
 * from the snapshot and lags by the time since the cut, which breaks applications that compare
 * wall-clock times across machines. One exec of `hr-clock set` through the agent; the value sent
 * is the host's time when the command leaves, plus half the round trip of a first `get`. Returns
 * the lag found, ms (host − guest, before the correction).
 */
export async function syncGuestClock(vm: Pick<Vm, "exec" | "spec">): Promise<number> {
  const sentAt = performance.now();
  const probe = await vm.exec("hr-clock get", 10_000);
  const oneWayMs = (performance.now() - sentAt) / 2;
  if (probe.exitCode !== 0) throw new Error(`hr-clock get failed: ${probe.stderr.toString("utf8").trim()}`);
  const hostNow = Date.now();
  const result = await vm.exec(`hr-clock set ${Math.round(hostNow + oneWayMs)}`, 10_000);
  if (result.exitCode !== 0) throw new Error(`hr-clock set failed: ${result.stderr.toString("utf8").trim()}`);
  const before = Number(result.stdout.toString("utf8").trim());
  if (!Number.isFinite(before)) throw new Error("hr-clock set printed no previous time");
  return Math.round(hostNow + oneWayMs - before);
}
