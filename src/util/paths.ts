import { homedir } from "node:os";
import { join, resolve } from "node:path";

/**
 * Where HotRestore keeps things outside git.
 * - cache: the guest image and the accel verdict (HOTRESTORE_CACHE, else $XDG_CACHE_HOME/hotrestore).
 * - state: the daemon's socket, VM runtime files and logs (HOTRESTORE_HOME, else ~/.hotrestore).
 * Tests point both at temporary directories so they never touch a user's cluster.
 */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HOTRESTORE_CACHE) return resolve(env.HOTRESTORE_CACHE);
  const base = env.XDG_CACHE_HOME ? resolve(env.XDG_CACHE_HOME) : join(homedir(), ".cache");
  return join(base, "hotrestore");
}

export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HOTRESTORE_HOME) return resolve(env.HOTRESTORE_HOME);
  return join(homedir(), ".hotrestore");
}

/** native/qemu-no-thp.c as scripts/setup.sh builds it. */
export function noThpShim(env: NodeJS.ProcessEnv = process.env): string {
  return join(cacheDir(env), "native", "qemu-no-thp.so");
}

export function guestDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(cacheDir(env), "guest");
}
