import type { Socket } from "node:net";
import { setTimeout as delay } from "node:timers/promises";
import { messageOf } from "../util/errors.ts";
import { qmpError } from "./errors.ts";
import { connectUnix } from "../util/unix-socket.ts";

/**
 * Right after QEMU is spawned its `-qmp unix:PATH,server=on,wait=off` socket may not exist yet
 * (ENOENT) or may be a stale file nobody listens on yet (ECONNREFUSED). Those two are retried every
 * `intervalMs` until `retryDeadline` (a Date.now() value); any other error fails at once.
 */
const RETRYABLE = new Set(["ENOENT", "ECONNREFUSED", "EAGAIN"]);

export async function connectUnixWithRetry(
  path: string,
  retryDeadline: number,
  intervalMs = 25,
): Promise<Socket> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await connectUnix(path);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? "";
      if (!RETRYABLE.has(code) || Date.now() + intervalMs > retryDeadline) {
        throw qmpError("QMP_CONNECT_FAILED", `cannot connect to QMP socket ${path}: ${messageOf(error)}`, {
          cause: error,
          hint:
            `gave up after ${attempt} attempt(s); check that QEMU is still running and was started ` +
            `with -qmp unix:${path},server=on,wait=off`,
        });
      }
      await delay(intervalMs);
    }
  }
}
