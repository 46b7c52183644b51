import { createConnection, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

/** One attempt to connect to a unix socket; rejects with the socket's error (ENOENT, ECONNREFUSED...). */
export function connectUnix(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path });
    const onError = (error: Error): void => {
      socket.destroy();
      reject(error);
    };
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.off("error", onError);
      resolve(socket);
    });
  });
}

/** Connects, retrying every 20 ms until `timeoutMs` has passed (a server that is still starting). */
export async function connectUnixWithRetry(path: string, timeoutMs: number): Promise<Socket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await connectUnix(path);
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(20);
    }
  }
}
