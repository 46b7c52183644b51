import assert from "node:assert/strict";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { after, describe, it } from "node:test";
import { QmpClient } from "../../../src/qmp/client.ts";
import { QmpCommandError } from "../../../src/qmp/errors.ts";
import type { QmpEvent } from "../../../src/qmp/types.ts";
import { isHrError } from "../../../src/util/errors.ts";
import { FakeQmpServer, type ReceivedCommand } from "./fake-qmp-server.ts";

const servers: FakeQmpServer[] = [];
const clients: QmpClient[] = [];

async function server(): Promise<FakeQmpServer> {
  const fake = await FakeQmpServer.start();
  servers.push(fake);
  return fake;
}

async function connect(fake: FakeQmpServer, commandTimeoutMs = 2000): Promise<QmpClient> {
  const client = await QmpClient.connect(fake.path, { timeoutMs: 2000, commandTimeoutMs });
  clients.push(client);
  return client;
}

function hasCode(code: string): (error: unknown) => boolean {
  return (error) => isHrError(error, code);
}

after(async () => {
  for (const client of clients) client.close();
  await Promise.all(clients.map((client) => client.closed));
  await Promise.all(servers.map((fake) => fake.close()));
});

void describe("QmpClient connect", () => {
  void it("reads the greeting, negotiates capabilities, and is ready", async () => {
    const fake = await server();
    const client = await connect(fake);
    assert.deepEqual(client.version.qemu, { major: 7, minor: 2, micro: 22 });
    assert.deepEqual(client.capabilities, ["oob"]);
    assert.equal(client.isClosed, false);
    const commands = fake.connections[0]!.commands;
    assert.deepEqual(commands, [{ execute: "qmp_capabilities", id: 1 }]);
  });

  void it("retries until the socket appears", async () => {
    const fake = await FakeQmpServer.create();
    servers.push(fake);
    const connecting = QmpClient.connect(fake.path, { timeoutMs: 3000 });
    await delay(120);
    await fake.listen();
    const client = await connecting;
    clients.push(client);
    assert.equal(client.version.qemu.major, 7);
  });

  void it("gives up with QMP_CONNECT_FAILED when the socket never appears", async () => {
    const fake = await server();
    const missing = join(fake.path, "..", "missing.sock");
    await assert.rejects(
      QmpClient.connect(missing, { timeoutMs: 1000, retryUntilMs: 0 }),
      hasCode("QMP_CONNECT_FAILED"),
    );
    const started = Date.now();
    await assert.rejects(QmpClient.connect(missing, { timeoutMs: 150 }), hasCode("QMP_CONNECT_FAILED"));
    assert.ok(Date.now() - started >= 100, "retried for about timeoutMs");
  });

  void it("times out with QMP_TIMEOUT when no greeting comes", async () => {
    const fake = await server();
    fake.greet = false;
    await assert.rejects(QmpClient.connect(fake.path, { timeoutMs: 150 }), hasCode("QMP_TIMEOUT"));
  });

  void it("fails with QMP_PROTOCOL when the first message is not a greeting", async () => {
    const fake = await server();
    fake.greet = false;
    const connecting = QmpClient.connect(fake.path, { timeoutMs: 1000 });
    while (fake.connections.length === 0) await delay(5);
    fake.connections[0]!.send({ return: {}, id: 1 });
    await assert.rejects(connecting, hasCode("QMP_PROTOCOL"));
  });
});

void describe("QmpClient commands", () => {
  void it("correlates out-of-order replies by id", async () => {
    const fake = await server();
    const held: ReceivedCommand[] = [];
    fake.onCommand = (command, connection) => {
      held.push(command);
      if (held.length === 3) for (const c of [...held].reverse()) connection.reply(c, { name: c.execute });
    };
    const client = await connect(fake);
    const results = await Promise.all([
      client.executeRaw("first"),
      client.executeRaw("second", { a: 1 }),
      client.execute("query-name"),
    ]);
    assert.deepEqual(results, [{ name: "first" }, { name: "second" }, { name: "query-name" }]);
    const ids = fake.connections[0]!.commands.map((c) => c.id);
    assert.equal(new Set(ids).size, ids.length, "ids are unique");
    assert.deepEqual(held[1]!.arguments, { a: 1 });
  });

  void it("rejects an error reply with QMP_COMMAND_FAILED keeping QEMU's class", async () => {
    const fake = await server();
    fake.onCommand = (command, connection) =>
      connection.fail(command, "CommandNotFound", `The command ${command.execute} has not been found`);
    const client = await connect(fake);
    const error = await client.executeRaw("nope").then(
      () => assert.fail("should reject"),
      (e: unknown) => e,
    );
    assert.ok(error instanceof QmpCommandError);
    assert.equal(error.code, "QMP_COMMAND_FAILED");
    assert.equal(error.qmpClass, "CommandNotFound");
    assert.equal(error.message, "nope: The command nope has not been found");
  });

  void it("times out with QMP_TIMEOUT, ignores the late reply, and stays usable", async () => {
    const fake = await server();
    const late: ReceivedCommand[] = [];
    fake.onCommand = (command, connection) => {
      if (command.execute === "slow") late.push(command);
      else connection.reply(command, "fast");
    };
    const client = await connect(fake);
    await assert.rejects(client.executeRaw("slow", undefined, { timeoutMs: 50 }), hasCode("QMP_TIMEOUT"));
    fake.connections[0]!.reply(late[0]!, "too late");
    assert.equal(await client.executeRaw("quick"), "fast");
  });

  void it("rejects pending calls and waiters with QMP_CLOSED when the server closes mid-call", async () => {
    const fake = await server();
    fake.onCommand = (_command, connection) => connection.socket.destroy();
    const client = await connect(fake);
    const waiting = client.waitForEvent("STOP", { timeoutMs: 2000 });
    await assert.rejects(client.execute("stop"), hasCode("QMP_CLOSED"));
    await assert.rejects(waiting, hasCode("QMP_CLOSED"));
    await client.closed;
    assert.equal(client.isClosed, true);
    await assert.rejects(client.execute("cont"), hasCode("QMP_CLOSED"));
  });

  void it("resolves quit when QEMU closes the connection instead of replying", async () => {
    const fake = await server();
    fake.onCommand = (_command, connection) => {
      connection.event("SHUTDOWN", { guest: false, reason: "host-qmp-quit" });
      connection.socket.end();
    };
    const client = await connect(fake);
    const shutdown = client.waitForEvent("SHUTDOWN", { timeoutMs: 1000 });
    assert.deepEqual(await client.execute("quit"), {});
    assert.equal((await shutdown).data.reason, "host-qmp-quit");
  });

  void it("closes on garbage from QEMU with closeReason QMP_PROTOCOL", async () => {
    const fake = await server();
    fake.onCommand = (_command, connection) => connection.socket.write("not json\r\n");
    const client = await connect(fake);
    await assert.rejects(client.execute("query-status"), hasCode("QMP_CLOSED"));
    assert.equal(client.closeReason?.code, "QMP_PROTOCOL");
  });

  void it("close() is idempotent and rejects pending calls", async () => {
    const fake = await server();
    const client = await connect(fake);
    const rejected = assert.rejects(client.execute("query-status"), hasCode("QMP_CLOSED"));
    client.close();
    client.close();
    await client.closed;
    client.close();
    await rejected;
    assert.equal(client.closeReason?.code, "QMP_CLOSED");
  });
});

void describe("QmpClient events", () => {
  void it("delivers events to listeners in wire order, including ones sharing a chunk with a reply", async () => {
    const fake = await server();
    fake.onCommand = (command, connection) => {
      connection.event("STOP");
      connection.reply(command, {});
      connection.event("MIGRATION", { status: "setup" });
    };
    const client = await connect(fake);
    const seen: QmpEvent[] = [];
    const listener = (event: QmpEvent): void => void seen.push(event);
    client.on("event", listener);
    const migration = client.waitForEvent("MIGRATION", { timeoutMs: 1000 });
    await client.execute("stop");
    await migration;
    client.off("event", listener);
    assert.deepEqual(
      seen.map((e) => [e.event, e.data]),
      [
        ["STOP", undefined],
        ["MIGRATION", { status: "setup" }],
      ],
    );
    assert.deepEqual(seen[0]!.timestamp, { seconds: 1795649096, microseconds: 571326 });
  });

  void it("waitForEvent armed before the command sees an event sent before the reply", async () => {
    const fake = await server();
    fake.onCommand = (command, connection) => {
      connection.event("MIGRATION", { status: "setup" });
      connection.event("MIGRATION", { status: "completed" });
      connection.reply(command, {});
    };
    const client = await connect(fake);
    const done = client.waitForEvent("MIGRATION", {
      timeoutMs: 1000,
      predicate: (event) => event.data.status === "completed",
    });
    await client.execute("migrate", { uri: "exec:cat > /dev/null" });
    assert.equal((await done).data.status, "completed");
  });

  void it("waitForEvent does not see events from before it was armed, and times out", async () => {
    const fake = await server();
    fake.onCommand = (command, connection) => {
      connection.event("STOP");
      connection.reply(command, {});
    };
    const client = await connect(fake);
    await client.execute("stop");
    await assert.rejects(client.waitForEvent("STOP", { timeoutMs: 50 }), hasCode("QMP_TIMEOUT"));
  });

  void it("waitForEvent can be aborted", async () => {
    const fake = await server();
    const client = await connect(fake);
    const controller = new AbortController();
    const waiting = client.waitForEvent("RESUME", { timeoutMs: 5000, signal: controller.signal });
    controller.abort();
    await assert.rejects(waiting, { name: "AbortError" });
  });
});
