/**
 * The QMP client against a real QEMU 7.2 (TCG, no guest: -S keeps the CPU in "prelaunch").
 *
 * Bytes QEMU 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3) actually wrote on connect, then in reply to
 * qmp_capabilities, an unknown command and quit (note SHUTDOWN arrives before quit's reply):
 *   {"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}\r\n
 *   {"return": {}, "id": 1}\r\n
 *   {"id": 5, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}\r\n
 *   {"timestamp": {"seconds": 1795649096, "microseconds": 571326}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}\r\n
 *   {"return": {}, "id": 7}\r\n
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { QmpClient } from "../../src/qmp/client.ts";
import { QmpCommandError } from "../../src/qmp/errors.ts";

let dir = "";
let qemu: ChildProcess | undefined;
let exited: Promise<number | null> = Promise.resolve(null);
let client: QmpClient | undefined;
let stderr = "";

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "hr-qmp-real-"));
  const argv = [
    "-accel",
    "tcg",
    "-m",
    "64",
    "-nodefaults",
    "-display",
    "none",
    "-S",
    "-name",
    "hr-qmp-check",
  ];
  argv.push("-qmp", `unix:${join(dir, "q.sock")},server=on,wait=off`);
  const child = spawn("qemu-system-x86_64", argv, { stdio: ["ignore", "ignore", "pipe"] });
  qemu = child;
  child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  exited = new Promise((resolve) => {
    child.once("exit", (code) => resolve(code));
    child.once("error", (error) => {
      stderr += `spawn failed: ${error.message}`;
      resolve(null);
    });
  });
});

after(async () => {
  client?.close();
  if (qemu?.pid !== undefined && qemu.exitCode === null && qemu.signalCode === null) qemu.kill("SIGKILL");
  await exited;
  await rm(dir, { recursive: true, force: true });
});

void describe("QMP against real QEMU 7.2", () => {
  void it("connects (retrying until the socket exists) and reads the greeting", async () => {
    client = await QmpClient.connect(join(dir, "q.sock"), { timeoutMs: 10_000 });
    assert.equal(client.version.qemu.major, 7, stderr);
    assert.equal(client.version.qemu.minor, 2);
    assert.deepEqual(client.capabilities, ["oob"]);
  });

  void it("runs query-status, query-name, qom-get and human-monitor-command", async () => {
    const qmp = client!;
    assert.deepEqual(await qmp.execute("query-status"), {
      status: "prelaunch",
      singlestep: false,
      running: false,
    });
    assert.deepEqual(await qmp.execute("query-name"), { name: "hr-qmp-check" });
    const machine = await qmp.execute("qom-get", { path: "/machine", property: "type" });
    assert.match(String(machine), /^pc-i440fx-7\.2/);
    const info = await qmp.execute("human-monitor-command", { "command-line": "info status" });
    assert.match(info, /paused \(prelaunch\)/);
  });

  void it("rejects unknown and failing commands with QMP_COMMAND_FAILED and QEMU's class", async () => {
    const qmp = client!;
    const unknown = await qmp.executeRaw("no-such-command").catch((e: unknown) => e);
    assert.ok(unknown instanceof QmpCommandError);
    assert.equal(unknown.code, "QMP_COMMAND_FAILED");
    assert.equal(unknown.qmpClass, "CommandNotFound");
    const badArgs = await qmp.executeRaw("migrate-incoming", { nope: 1 }).catch((e: unknown) => e);
    assert.ok(badArgs instanceof QmpCommandError);
    assert.equal(badArgs.qmpClass, "GenericError");
  });

  void it("sees RESUME and STOP through waitForEvent armed before cont and stop", async () => {
    const qmp = client!;
    const resumed = qmp.waitForEvent("RESUME", { timeoutMs: 5_000 });
    await qmp.execute("cont");
    await resumed;
    const stopped = qmp.waitForEvent("STOP", { timeoutMs: 5_000 });
    await qmp.execute("stop");
    await stopped;
    assert.equal((await qmp.execute("query-status")).status, "paused");
  });

  void it("quits: SHUTDOWN event, reply, and the process exits", async () => {
    const qmp = client!;
    const shutdown = qmp.waitForEvent("SHUTDOWN", { timeoutMs: 5_000 });
    assert.deepEqual(await qmp.execute("quit"), {});
    assert.deepEqual((await shutdown).data, { guest: false, reason: "host-qmp-quit" });
    await qmp.closed;
    assert.equal(await exited, 0);
  });
});
