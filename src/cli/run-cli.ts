import { execFile } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = join(ROOT, "bin", "hotrestore.js");

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * Runs the real CLI as a child process against a private state directory, timing it
 * (benchmarks and integration tests drive HotRestore exactly as a user does).
 */
export async function cli(home: string, args: string[], timeoutMs = 900_000): Promise<Run> {
  const started = performance.now();
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { env: { ...process.env, HOTRESTORE_HOME: home }, maxBuffer: 64 << 20, timeout: timeoutMs, cwd: ROOT },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : 1) : 0;
        resolve({ code, stdout, stderr, ms: performance.now() - started });
      },
    );
  });
}

export async function cliJson<T>(home: string, args: string[]): Promise<T> {
  const run = await cli(home, [...args, "--json"]);
  if (run.code !== 0) throw new Error(`hotrestore ${args.join(" ")} failed: ${run.stderr}`);
  return JSON.parse(run.stdout) as T;
}
