import { createServer, type Server } from "node:net";
import { chmod, lstat, rm } from "node:fs/promises";
import { HrError, messageOf } from "../util/errors.ts";

/**
 * The unix socket server behind one switch port. QEMU 7.2's `-netdev stream` cannot reconnect,
 * so the server must be listening before QEMU starts. A socket file already at the path is taken
 * as left by a switch that died, and replaced: the switch directory must belong to one switch
 * (the caller's job, e.g. a single-instance lock). It is not probed, since a probe connection would
 * replace the QEMU connection of a live switch. Any other kind of file is refused.
 */
export const MAX_SOCKET_PATH_BYTES = 107;

export async function listenPortServer(path: string): Promise<Server> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
    throw new HrError("SWITCH_SOCKET_PATH_TOO_LONG", `socket path is too long for a unix socket: ${path}`, {
      hint: `unix socket paths are limited to ${MAX_SOCKET_PATH_BYTES} bytes; use a shorter state directory`,
    });
  }
  await removeStaleSocket(path);
  const server = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => {
        server.off("error", reject);
        resolve();
      });
    });
    await chmod(path, 0o600);
  } catch (error) {
    server.close();
    throw new HrError("SWITCH_LISTEN_FAILED", `cannot listen on ${path}: ${messageOf(error)}`, {
      cause: error,
    });
  }
  // Errors after listening (rare) must not crash the process; connections carry their own.
  server.on("error", () => undefined);
  return server;
}

export async function closePortServer(server: Server, path: string): Promise<void> {
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
  });
  await rm(path, { force: true });
}

async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch {
    return;
  }
  if (!isSocket) {
    throw new HrError("SWITCH_SOCKET_IN_USE", `${path} exists and is not a socket`, {
      hint: "remove the file or choose another switch directory",
    });
  }
  await rm(path, { force: true });
}
