import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { stateDir } from "../util/paths.ts";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Stops the daemon of the state directory by its PID (daemon.pid): SIGTERM (it takes its cluster
 * down and exits), then SIGKILL after `graceMs` (its QEMUs die with it: parent-death signal).
 * Works whatever the daemon is doing, unlike a `down` request, which waits for a running restore.
 */
export async function stopDaemon(state = stateDir(), graceMs = 10_000): Promise<void> {
  const text = await readFile(join(state, "daemon.pid"), "utf8").catch(() => "");
  const pid = Number.parseInt(text, 10);
  if (!Number.isInteger(pid) || pid <= 1 || !alive(pid)) return;
  process.kill(pid, "SIGTERM");
  const deadline = performance.now() + graceMs;
  while (alive(pid) && performance.now() < deadline) await sleep(50);
  if (alive(pid)) process.kill(pid, "SIGKILL");
  while (alive(pid)) await sleep(20);
}
