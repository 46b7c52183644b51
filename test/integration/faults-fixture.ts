/**
 * Helpers for the fault-injection tests (issue 7 part 1): the CLI run with its progress notes
 * watched line by line (so a fault is timed on what the daemon says it is doing, not on a sleep),
 * the daemon's log polled, QEMU processes found by their directory in this lab, and the checks
 * every fault test ends with.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isAlive, ROOT, type CliResult, type Lab } from "./fixture.ts";

const BIN = join(ROOT, "bin", "hotrestore.js");

export interface LiveCli {
  /** Resolves with the first stderr line matching `pattern`. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<string>;
  done: Promise<CliResult>;
}

/** Runs the CLI against the lab, with `env` added (a daemon it starts inherits it). */
export function startCli(lab: Lab, args: string[], env: Record<string, string> = {}): LiveCli {
  const started = performance.now();
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, HOTRESTORE_HOME: lab.home, ...env },
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  const watchers: { pattern: RegExp; resolve: (line: string) => void }[] = [];
  const check = (): void => {
    for (const line of stderr.split("\n")) {
      for (const watcher of watchers.splice(0)) {
        if (watcher.pattern.test(line)) watcher.resolve(line);
        else watchers.push(watcher);
      }
    }
  };
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
    check();
  });
  const done = new Promise<CliResult>((resolve) => {
    child.once("close", (code) =>
      resolve({ code: code ?? 1, stdout, stderr, ms: performance.now() - started }),
    );
  });
  return {
    done,
    async waitFor(pattern, timeoutMs = 120_000) {
      const seen = new Promise<string>((resolve) => {
        watchers.push({ pattern, resolve });
        check();
      });
      const ended = done.then((result) => {
        throw new Error(`the CLI ended before ${String(pattern)}: ${result.stderr}`);
      });
      const timeout = sleep(timeoutMs, undefined, { ref: false }).then(() => {
        throw new Error(`no ${String(pattern)} within ${timeoutMs} ms: ${stderr}`);
      });
      return Promise.race([seen, ended, timeout]);
    },
  };
}

export interface LogLine {
  time: number;
  msg?: string;
  vm?: string;
}

/** The first line of the daemon's log (pino JSON) logged since `since` (epoch ms) that `match`es. */
export async function waitForLog(
  lab: Lab,
  since: number,
  match: (line: LogLine) => boolean,
  timeoutMs = 120_000,
): Promise<LogLine> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const text = await readFile(join(lab.home, "daemon.log"), "utf8").catch(() => "");
    for (const raw of text.split("\n")) {
      if (raw.trim() === "") continue;
      const line = JSON.parse(raw) as LogLine;
      if (line.time >= since && match(line)) return line;
    }
    await sleep(50);
  }
  throw new Error(`no such line in the daemon log within ${timeoutMs} ms`);
}

/** PID of the QEMU this lab runs for `vm` (the restoring one when `incoming`). */
export async function qemuOf(lab: Lab, vm: string, incoming = false): Promise<number | undefined> {
  for (const pid of await lab.processes()) {
    const argv = (await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).split("\0");
    if (!argv.some((arg) => arg.includes(`/vms/${vm}/`))) continue;
    if (incoming && !argv.includes("-incoming")) continue;
    return pid;
  }
  return undefined;
}

/** Resolves once `pid` is gone; the time it took, ms. */
export async function waitGone(pid: number, timeoutMs: number): Promise<number> {
  const started = Date.now();
  while (isAlive(pid) && Date.now() - started < timeoutMs) await sleep(20);
  assert.ok(!isAlive(pid), `process ${pid} still alive after ${timeoutMs} ms`);
  return Date.now() - started;
}

export function killPid(pid: number | undefined): void {
  assert.ok(pid !== undefined, "no such process");
  process.kill(pid, "SIGKILL");
}

/** No QEMU of this lab, and no daemon (the one whose pid it wrote), is left. */
export async function assertNothingLeft(lab: Lab): Promise<void> {
  assert.deepEqual(await lab.waitNoProcesses(15_000), [], "no QEMU or helper left");
  const daemon = await lab.daemonPid();
  if (daemon !== undefined) await waitGone(daemon, 15_000);
}

/** Names of the snapshots listed (committed ones only: a half snapshot must never show). */
export async function snapshotNames(lab: Lab): Promise<string[]> {
  const list = await lab.cliJson<{ name: string }[]>(["snapshots"]);
  return list.map((entry) => entry.name).sort();
}

export async function assertVerified(lab: Lab, name: string): Promise<void> {
  const verify = await lab.cli(["snapshot", "verify", name]);
  assert.equal(verify.code, 0, `snapshot ${name} intact: ${verify.stdout}${verify.stderr}`);
}

/** Temporary snapshot directories left in the store. */
export async function tempDirs(lab: Lab): Promise<string[]> {
  const names = await readdir(join(lab.home, "snapshots")).catch(() => [] as string[]);
  return names.filter((name) => name.startsWith(".tmp-") || name.startsWith(".trash-"));
}

/** Every VM of the cluster runs and answers a command. */
export async function assertRunning(lab: Lab, vms: string[]): Promise<void> {
  const status = await lab.cliJson<{ vms: { name: string; state: string }[] }>(["status"]);
  const states = Object.fromEntries(status.vms.map((vm) => [vm.name, vm.state]));
  for (const vm of vms) {
    assert.equal(states[vm], "running", `VM ${vm} runs: ${JSON.stringify(states)}`);
    const echo = await lab.cli(["exec", vm, "--", "echo", "alive"]);
    assert.equal(echo.stdout.trim(), "alive", `VM ${vm} answers: ${echo.stderr}`);
  }
}

/** The daemon logged that HOTRESTORE_FAULT's fault hit `vm`. */
export function faultInjected(vm: string): (line: LogLine) => boolean {
  return (line) => line.vm === vm && (line.msg ?? "").includes("fault injected");
}

/** Kills, by PID, the lab's daemon and every process naming its directory (Lab.cleanup without rm). */
export async function killLab(lab: Lab): Promise<void> {
  const daemon = await lab.daemonPid();
  for (const pid of [...(daemon === undefined ? [] : [daemon]), ...(await lab.processes())]) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  await lab.waitNoProcesses(5_000);
}

/** Boots the fault tests' cluster (a, b: 128 MiB each) and takes snapshot s1, the one that must survive. */
export async function upWithSnapshot(lab: Lab, name: string): Promise<void> {
  const spec = await lab.writeSpec({
    name,
    vms: [
      { name: "a", memoryMiB: 128 },
      { name: "b", memoryMiB: 128 },
    ],
  });
  const up = await lab.cli(["up", spec]);
  assert.equal(up.code, 0, up.stderr);
  const snap = await lab.cli(["snapshot", "--name", "s1"]);
  assert.equal(snap.code, 0, snap.stderr);
}
