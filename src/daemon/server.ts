import { chmod, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import type { Controller } from "../control/controller.ts";
import { encodeLine, LineDecoder, requestSchema, type Reply } from "../control/wire.ts";
import { isHrError, messageOf } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";

/**
 * The daemon's control socket: a unix socket, mode 0600, speaking the JSON-lines protocol of
 * control/wire.ts. Each request is handed to the Controller; progress notes stream back.
 */
export async function listenControl(
  path: string,
  controller: Controller,
  log: Logger,
  afterReply: (action: unknown) => void,
): Promise<Server> {
  await rm(path, { force: true });
  const server: Server = createServer((socket) => serve(server, socket, controller, log, afterReply));
  const oldMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => resolve());
    });
  } finally {
    process.umask(oldMask);
  }
  await chmod(path, 0o600);
  return server;
}

/** Emits `request` (with the action) on `server` for each request, before it runs. */
function serve(
  server: Server,
  socket: Socket,
  controller: Controller,
  log: Logger,
  afterReply: (action: unknown) => void,
): void {
  const decoder = new LineDecoder();
  const send = (reply: Reply): void => {
    if (!socket.destroyed) socket.write(encodeLine(reply));
  };
  socket.on("error", () => undefined);
  socket.on("data", (chunk: Buffer) => {
    let messages: unknown[];
    try {
      messages = decoder.push(chunk);
    } catch (error) {
      log.warn({ err: error }, "control protocol error");
      socket.destroy();
      return;
    }
    for (const message of messages) {
      const request = requestSchema.safeParse(message);
      if (!request.success) {
        send({ id: -1, ok: false, error: { code: "CONTROL_PROTOCOL", message: "malformed request" } });
        continue;
      }
      const { id, action } = request.data;
      log.info({ id, action: summarize(action) }, "request");
      server.emit("request", action);
      controller
        .execute(action, (progress) => send({ id, progress }))
        .then(
          (result) => send({ id, ok: true, result }),
          (error: unknown) => {
            log.error({ err: error }, "request failed");
            const wire = isHrError(error)
              ? error.toJSON()
              : { code: "INTERNAL", message: messageOf(error), hint: "see the daemon log" };
            send({ id, ok: false, error: wire });
          },
        )
        .finally(() => afterReply(action))
        .catch(() => undefined);
    }
  });
}

function summarize(action: unknown): unknown {
  if (typeof action === "object" && action !== null && "type" in action) return action.type;
  return action;
}
