import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { HrError, messageOf } from "../util/errors.ts";

/**
 * Starts helper processes (QEMU above all) so that they can never outlive us: each is exec'd
 * through util-linux's `setpriv --pdeathsig KILL`, so the kernel kills it the moment the process
 * that started it dies, even by `kill -9`. Processes are stopped by PID only.
 */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface GuardedProcess {
  readonly pid: number;
  readonly logFile: string;
  /** Settles when the process has exited (never rejects). */
  readonly exited: Promise<ExitStatus>;
  isRunning(): boolean;
  kill(signal?: NodeJS.Signals): void;
  /** Kills with SIGTERM, then SIGKILL after `graceMs`; resolves once it is gone. */
  stop(graceMs?: number): Promise<ExitStatus>;
  /** The last lines the process wrote (stdout and stderr share the log), for error messages. */
  logTail(lines?: number): Promise<string>;
}

export const SETPRIV = "setpriv";

/** prctl's syscall number per architecture (perl's `syscall` needs it), and PR_SET_THP_DISABLE. */
const PRCTL_SYSCALL: Partial<Record<NodeJS.Architecture, number>> = { x64: 157, arm64: 167 };
const PR_SET_THP_DISABLE = 41;

/**
 * argv prefix that runs the command with transparent huge pages disabled for its whole process
 * (prctl PR_SET_THP_DISABLE, inherited across exec), through perl (perl-base is Essential on
 * Debian); empty where we do not know prctl's number.
 */
export function thpDisablePrefix(arch: NodeJS.Architecture = process.arch): string[] {
  const prctl = PRCTL_SYSCALL[arch];
  if (prctl === undefined) return [];
  const script = `syscall(${prctl}, ${PR_SET_THP_DISABLE}, 1, 0, 0, 0) == 0 or die "prctl: $!\n"; exec { $ARGV[0] } @ARGV or die "exec $ARGV[0]: $!\n"`;
  return ["perl", "-e", script, "--"];
}

export interface SpawnOptions {
  /** Run without transparent huge pages (thpDisablePrefix). */
  noTransparentHugepages?: boolean;
  /** A shared library to LD_PRELOAD into the command (e.g. native/qemu-no-thp.c). */
  preload?: string;
}

export function spawnGuarded(
  command: string,
  args: readonly string[],
  logFile: string,
  options: SpawnOptions = {},
): GuardedProcess {
  const fd = openSync(logFile, "a", 0o600);
  let child;
  try {
    const prefix = options.noTransparentHugepages === true ? thpDisablePrefix() : [];
    child = spawn(SETPRIV, ["--pdeathsig", "KILL", "--", ...prefix, command, ...args], {
      stdio: ["ignore", fd, fd],
      detached: false,
      env: options.preload === undefined ? process.env : { ...process.env, LD_PRELOAD: options.preload },
    });
  } finally {
    closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) {
    throw new HrError("PROCESS_SPAWN_FAILED", `cannot start ${command}`, {
      hint: `check that ${command} and ${SETPRIV} (util-linux) are installed: npm run setup`,
    });
  }
  let running = true;
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once("exit", (code, signal) => {
      running = false;
      resolve({ code, signal });
    });
    child.once("error", () => {
      running = false;
      resolve({ code: null, signal: null });
    });
  });

  const handle: GuardedProcess = {
    pid,
    logFile,
    exited,
    isRunning: () => running,
    kill(signal: NodeJS.Signals = "SIGKILL") {
      if (!running) return;
      try {
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    },
    async stop(graceMs = 2000) {
      if (!running) return exited;
      handle.kill("SIGTERM");
      const timer = setTimeout(() => handle.kill("SIGKILL"), graceMs);
      const status = await exited;
      clearTimeout(timer);
      return status;
    },
    async logTail(lines = 20) {
      try {
        const text = await readFile(logFile, "utf8");
        return text.trimEnd().split("\n").slice(-lines).join("\n");
      } catch (error) {
        return `(no log: ${messageOf(error)})`;
      }
    },
  };
  return handle;
}
