/**
 * The one fixture for integration tests with real QEMU: a private state directory per test file,
 * the real CLI run as a child process, and a cleanup that stops every process the test started,
 * by PID (the daemon's, and any QEMU whose command line names this test's directory), even when
 * the test failed.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ourMounts, unmountFuse } from "../../src/restore/vm/fuse/mount.ts";
import { setTimeout as sleep } from "node:timers/promises";
import { cli as runCli, type Run } from "../../src/cli/run-cli.ts";

export { ROOT } from "../../src/cli/run-cli.ts";
export type CliResult = Run;

/** The smallest cluster with a TCP flow: VMs a and b of 128 MiB, b streaming to a at 64 KiB/s. */
export function pairSpec(name: string): object {
  return {
    name,
    vms: [
      { name: "a", memoryMiB: 128 },
      { name: "b", memoryMiB: 128, workload: { kind: "tcp-stream", to: "a", port: 7001, rateKiBps: 64 } },
    ],
  };
}

export class Lab {
  readonly home: string;

  private constructor(home: string) {
    this.home = home;
  }

  static async create(prefix = "hr-it-"): Promise<Lab> {
    return new Lab(await mkdtemp(join(tmpdir(), prefix)));
  }

  env(): NodeJS.ProcessEnv {
    return { ...process.env, HOTRESTORE_HOME: this.home };
  }

  async cli(args: string[], timeoutMs = 300_000): Promise<CliResult> {
    return runCli(this.home, args, timeoutMs);
  }

  async cliJson<T>(args: string[]): Promise<T> {
    const result = await this.cli([...args, "--json"]);
    if (result.code !== 0)
      throw new Error(`hotrestore ${args.join(" ")} failed (${result.code}): ${result.stderr}`);
    return JSON.parse(result.stdout) as T;
  }

  async writeSpec(spec: unknown): Promise<string> {
    const path = join(this.home, "spec.json");
    await writeFile(path, JSON.stringify(spec));
    return path;
  }

  async daemonPid(): Promise<number | undefined> {
    const text = await readFile(join(this.home, "daemon.pid"), "utf8").catch(() => "");
    const pid = Number.parseInt(text, 10);
    return Number.isFinite(pid) ? pid : undefined;
  }

  /** PIDs of live processes whose command line mentions this lab's directory (its QEMUs). */
  async processes(): Promise<number[]> {
    const pids: number[] = [];
    for (const entry of await readdir("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
      if (cmdline.includes(this.home) && Number(entry) !== process.pid) {
        const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
        if (!/\) Z /.test(stat)) pids.push(Number(entry));
      }
    }
    return pids;
  }

  async waitNoProcesses(timeoutMs = 10_000): Promise<number[]> {
    const deadline = Date.now() + timeoutMs;
    let left = await this.processes();
    while (left.length > 0 && Date.now() < deadline) {
      await sleep(100);
      left = await this.processes();
    }
    return left;
  }

  /** Stops everything this lab started, by PID, and removes its directory. */
  async cleanup(): Promise<void> {
    const daemon = await this.daemonPid();
    if (daemon !== undefined) kill(daemon);
    for (const pid of await this.processes()) kill(pid);
    await this.waitNoProcesses(5_000);
    // A killed daemon leaves its guest RAM file systems mounted (its next start would clean them):
    // rm would fail inside one.
    for (const dir of await ourMounts(this.home)) await unmountFuse(dir);
    await rm(this.home, { recursive: true, force: true });
  }
}

function kill(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
