import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { createConnection, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Controller } from "../../../src/control/controller.ts";
import { encodeLine, LineDecoder } from "../../../src/control/wire.ts";
import { listenControl } from "../../../src/daemon/server.ts";
import { silentLogger } from "../../../src/util/log.ts";

/**
 * Issue 7 part 4, the control socket: it is the daemon's only way in (a unix socket, no TCP port),
 * it is created mode 0600 whatever the umask, and malformed input is refused without harm.
 */
let dir = "";
let server: Server | undefined;
let socketPath = "";

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hr-hostile-sock-"));
  socketPath = join(dir, "daemon.sock");
  const controller = new Controller({
    stateDir: dir,
    cacheDir: join(dir, "cache"),
    guestDir: join(dir, "guest"),
    log: silentLogger(),
  });
  const umask = process.umask(0); // the most permissive umask a daemon could inherit
  try {
    server = await listenControl(socketPath, controller, silentLogger(), () => undefined);
  } finally {
    process.umask(umask);
  }
});
after(async () => {
  server?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Sends raw bytes, returns the decoded replies until the server closes or `count` arrived. */
async function exchange(bytes: string, count: number): Promise<unknown[]> {
  const socket = createConnection(socketPath);
  await once(socket, "connect");
  const decoder = new LineDecoder();
  const replies: unknown[] = [];
  socket.on("data", (chunk: Buffer) => {
    replies.push(...decoder.push(chunk));
    if (replies.length >= count) socket.end();
  });
  socket.write(bytes);
  await once(socket, "close");
  return replies;
}

describe("control socket", () => {
  it("is a unix socket of mode 0600, even under umask 0, and listens on no TCP port", async () => {
    const stats = await stat(socketPath);
    assert.ok(stats.isSocket());
    assert.equal(stats.mode & 0o777, 0o600);
    assert.equal(server?.address(), socketPath);
  });

  it("refuses malformed requests and unknown actions, and keeps serving", async () => {
    const replies = await exchange(
      [
        encodeLine({ id: "x", action: { type: "ping" } }),
        encodeLine({ id: 1, action: { type: "shell", command: "id" } }),
        encodeLine({ id: 2, action: { type: "exec", vm: "a", command: "id", extra: true } }),
        encodeLine({ id: 3, action: { type: "ping" } }),
      ].join(""),
      4,
    );
    const byId = new Map(replies.map((reply) => [(reply as { id: number }).id, reply]));
    assert.equal((byId.get(-1) as { error: { code: string } }).error.code, "CONTROL_PROTOCOL");
    assert.equal((byId.get(1) as { error: { code: string } }).error.code, "ACTION_INVALID");
    assert.equal((byId.get(2) as { error: { code: string } }).error.code, "ACTION_INVALID");
    assert.deepEqual((byId.get(3) as { ok: boolean; result: { pong: boolean } }).result.pong, true);
  });

  it("closes a connection that sends a line that is not JSON, and accepts the next one", async () => {
    const replies = await exchange("{ not json\n", 1);
    assert.deepEqual(replies, []);
    const again = await exchange(encodeLine({ id: 7, action: { type: "ping" } }), 1);
    assert.equal((again[0] as { id: number }).id, 7);
  });
});
