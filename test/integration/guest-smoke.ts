/**
 * Guest smoke check (a script, not a test): boots ONE real guest with QEMU (TCG) straight from the
 * cached image and exercises the agent and the guest programs.
 *
 *   bash scripts/setup.sh --quiet && npx tsx test/integration/guest-smoke.ts
 *
 * Prints each check with its timing; exits non-zero (process.exitCode) on the first failure, after
 * printing the guest console. QEMU is killed by pid in every case.
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { connect } from "node:net";
import { AgentClient } from "../../src/vm/agent-client.ts";
import { AgentDecoder, type AgentMessage } from "../../src/vm/agent-protocol.ts";
import { guestDir } from "../../src/util/paths.ts";
import { messageOf } from "../../src/util/errors.ts";

const READY_TIMEOUT_MS = 90_000;

function check(condition: boolean, what: string, detail: unknown = ""): void {
  if (!condition)
    throw new Error(`check failed: ${what} ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
}

function log(message: string): void {
  process.stdout.write(`guest-smoke: ${message}\n`);
}

async function step<T>(name: string, run: () => Promise<T>): Promise<T> {
  const started = Date.now();
  const value = await run();
  log(`ok   ${name} (${Date.now() - started} ms)`);
  return value;
}

async function readJson(agent: AgentClient, path: string): Promise<Record<string, number | string>> {
  const result = await agent.exec(`cat ${path}`, { timeoutMs: 5000 });
  check(result.exitCode === 0, `cat ${path}`, result.stderr.toString());
  return JSON.parse(result.stdout.toString()) as Record<string, number | string>;
}

/** Writes raw bytes on a fresh connection and returns the first message the agent sends back. */
async function rawExchange(path: string, bytes: Buffer): Promise<AgentMessage> {
  const socket = connect(path);
  try {
    return await new Promise<AgentMessage>((resolve, reject) => {
      const decoder = new AgentDecoder();
      const timer = setTimeout(() => reject(new Error("no reply to raw bytes within 10 s")), 10_000);
      socket.on("error", reject);
      socket.on("data", (chunk: Buffer) => {
        const [message] = decoder.push(chunk);
        if (message === undefined) return;
        clearTimeout(timer);
        resolve(message);
      });
      socket.write(bytes);
    });
  } finally {
    socket.destroy();
  }
}

async function main(): Promise<void> {
  const image = guestDir();
  for (const file of ["vmlinuz", "initramfs.cpio.gz"]) {
    check(existsSync(join(image, file)), `${image}/${file} exists`, "(run bash scripts/setup.sh)");
  }
  const dir = mkdtempSync(join(tmpdir(), "hr-guest-smoke-"));
  const socketPath = join(dir, "agent.sock");
  const consolePath = join(dir, "console.log");
  const diskPath = join(dir, "disk.qcow2");
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", diskPath, "64M"]);

  const argv = [
    "-name",
    "smoke",
    "-accel",
    "tcg",
    "-m",
    "256",
    "-smp",
    "1",
    "-nodefaults",
    "-no-reboot",
    "-display",
    "none",
    "-serial",
    `file:${consolePath}`,
    "-kernel",
    join(image, "vmlinuz"),
    "-initrd",
    join(image, "initramfs.cpio.gz"),
    "-append",
    "console=ttyS0 quiet panic=-1 hr.name=smoke hr.ip=10.0.0.2/24 hr.hosts=smoke:10.0.0.2,peer:10.0.0.3 hr.disk=1",
    "-chardev",
    `socket,id=agent0,path=${socketPath},server=on,wait=off`,
    "-device",
    "virtio-serial-pci",
    "-device",
    "virtserialport,chardev=agent0,name=org.hotrestore.agent",
    // A NIC on a hub with no other port: eth0 exists and gets its address, nothing leaves the VM.
    "-netdev",
    "hubport,id=net0,hubid=0",
    "-device",
    "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:02",
    "-drive",
    `file=${diskPath},if=virtio,format=qcow2`,
    // Seeds the guest's random pool at once (else mke2fs waits seconds for entropy under TCG).
    "-device",
    "virtio-rng-pci",
  ];
  const bootStarted = Date.now();
  const qemu: ChildProcess = spawn("qemu-system-x86_64", argv, { stdio: ["ignore", "ignore", "pipe"] });
  let qemuStderr = "";
  qemu.stderr?.on("data", (chunk: Buffer) => (qemuStderr += chunk.toString()));
  const qemuExited = new Promise<void>((resolve) => {
    qemu.once("exit", () => resolve());
    qemu.once("error", (error) => {
      qemuStderr += `spawn failed: ${error.message}`;
      resolve();
    });
  });
  let agent: AgentClient | undefined;
  try {
    log(`qemu pid ${qemu.pid} in ${dir}`);
    agent = await AgentClient.connect(socketPath, { timeoutMs: 10_000 });
    const connectedAt = Date.now();
    const hostname = await agent.waitReady(READY_TIMEOUT_MS);
    const readyMs = Date.now() - bootStarted;
    check(hostname === "smoke", "PONG carries the hostname", hostname);
    const uptime = await agent.exec("cut -d' ' -f1 /proc/uptime");
    log(
      `ok   boot -> agent ready in ${readyMs} ms (socket connected after ${connectedAt - bootStarted} ms, ` +
        `guest uptime ${uptime.stdout.toString().trim()} s)`,
    );

    await step("exec exit code, stdout and stderr", async () => {
      const result = await agent!.exec("echo hi; echo err >&2; exit 3");
      check(result.exitCode === 3, "exit code 3", result.exitCode);
      check(result.stdout.toString() === "hi\n", "stdout", result.stdout.toString());
      check(result.stderr.toString() === "err\n", "stderr", result.stderr.toString());
      check(!result.timedOut && !result.stdoutTruncated && !result.stderrTruncated, "no flags", result);
    });

    await step("network, hostname and /etc/hosts", async () => {
      const result = await agent!.exec(
        "ip -o addr show eth0; hostname; cat /etc/hosts; ping -c1 -W1 peer >/dev/null; echo $?",
      );
      const text = result.stdout.toString();
      check(text.includes("inet 10.0.0.2/24"), "eth0 has 10.0.0.2/24", text);
      check(/^smoke$/m.test(text), "hostname smoke", text);
      check(/^10\.0\.0\.3 peer$/m.test(text), "/etc/hosts names peer", text);
    });

    await step("a killed command reports 128+signal", async () => {
      const result = await agent!.exec("kill -9 $$");
      check(result.exitCode === 137, "exit code 137", result.exitCode);
    });

    await step("PING is answered while a long EXEC runs", async () => {
      const long = agent!.exec("sleep 3; echo done", { timeoutMs: 10_000 });
      const pingStarted = Date.now();
      await agent!.ping(5000);
      const pingMs = Date.now() - pingStarted;
      const result = await long;
      check(pingMs < 2000, "ping answered before the sleep ended", `${pingMs} ms`);
      check(result.stdout.toString() === "done\n", "long exec output", result.stdout.toString());
    });

    await step("a background child holding the pipes does not hang the reply", async () => {
      const result = await agent!.exec("sleep 100 & echo started");
      check(
        result.exitCode === 0 && result.stdout.toString() === "started\n",
        "output",
        result.stdout.toString(),
      );
      check(result.durationMs < 3000, "returns promptly", `${result.durationMs} ms`);
    });

    await step("guest-side timeout kills the command", async () => {
      const result = await agent!.exec("sleep 5", { timeoutMs: 1000 });
      check(result.timedOut && result.exitCode === 124, "timedOut with exit 124", result);
      check(result.durationMs < 4000, "returns soon after the timeout", `${result.durationMs} ms`);
    });

    await step("large output (3 MB) and truncation at 8 MiB", async () => {
      const big = await agent!.exec("head -c 3000000 /dev/zero", { timeoutMs: 60_000 });
      check(big.stdout.length === 3_000_000 && !big.stdoutTruncated, "3 MB stdout", big.stdout.length);
      const huge = await agent!.exec("head -c 9000000 /dev/zero; echo tail >&2", { timeoutMs: 60_000 });
      check(
        huge.stdout.length === 8 * 1024 * 1024 && huge.stdoutTruncated,
        "truncated at 8 MiB",
        huge.stdout.length,
      );
      check(
        huge.stderr.toString() === "tail\n" && !huge.stderrTruncated,
        "stderr intact",
        huge.stderr.toString(),
      );
      log(`     3 MB in ${big.durationMs} ms, 9 MB (8 MiB kept) in ${huge.durationMs} ms`);
    });

    await step("data disk mounted on /data and writable", async () => {
      const result = await agent!.exec(
        "grep ' /data ' /proc/mounts && echo hello > /data/smoke.txt && sync && cat /data/smoke.txt",
      );
      check(result.exitCode === 0, "write /data", result.stderr.toString());
      const text = result.stdout.toString();
      check(/^\/dev\/vda \/data ext4 /m.test(text), "/data in /proc/mounts", text);
      check(text.endsWith("hello\n"), "read back", text);
    });

    await step("hr-stream recv + send for 3 s", async () => {
      const recvPid = await agent!.spawn("hr-stream recv 7001 /tmp/recv.json");
      const sendPid = await agent!.spawn("hr-stream send smoke 7001 256 /tmp/send.json");
      check(recvPid > 1 && sendPid > 1, "pids", { recvPid, sendPid });
      await sleep(3000);
      const send = await readJson(agent!, "/tmp/send.json");
      const recv = await readJson(agent!, "/tmp/recv.json");
      await agent!.exec(`kill ${recvPid} ${sendPid}`);
      log(`     send ${JSON.stringify(send)}`);
      log(`     recv ${JSON.stringify(recv)}`);
      check(Number(send.rateBps) > 0 && Number(recv.rateBps) > 0, "rates > 0", { send, recv });
      check(send.connects === 1 && recv.connects === 1, "one connection each", { send, recv });
      check(recv.seqErrors === 0, "no sequence errors", recv);
    });

    await step("hr-mem 16 MiB, 50 % hot, for 2 s", async () => {
      const pid = await agent!.spawn("hr-mem 16 50 /tmp/mem.json");
      await sleep(2000);
      const mem = await readJson(agent!, "/tmp/mem.json");
      await agent!.exec(`kill ${pid}`);
      log(`     mem ${JSON.stringify(mem)}`);
      check(mem.mib === 16 && mem.hotPercent === 50, "echoes its arguments", mem);
      check(Number(mem.touches) > 0 && Number(mem.rate) > 0, "touches > 0", mem);
    });

    await step("the host reconnects: a new client is served", async () => {
      await agent!.close();
      agent = await AgentClient.connect(socketPath, { timeoutMs: 5000 });
      check((await agent.waitReady(10_000)) === "smoke", "ping after reconnect", "");
    });

    await step("a malformed frame gets ERROR id 0, and the agent survives it", async () => {
      await agent!.close();
      const reply = await rawExchange(socketPath, Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
      check(reply.type === "error" && reply.id === 0, "ERROR id 0", reply);
      agent = await AgentClient.connect(socketPath, { timeoutMs: 5000 });
      check((await agent.waitReady(10_000)) === "smoke", "ping after garbage", "");
    });

    await step("a killed agent is respawned and answers on the same connection", async () => {
      await agent!.spawn("sleep 0.3; kill $(pidof hr-agent)");
      await sleep(1500);
      check((await agent!.waitReady(10_000)) === "smoke", "ping after respawn", "");
    });
    log("all checks passed");
  } catch (error) {
    process.exitCode = 1;
    log(`FAILED: ${messageOf(error)}`);
    log(`console log:\n${existsSync(consolePath) ? readFileSync(consolePath, "utf8") : "(none)"}`);
    if (qemuStderr) log(`qemu stderr:\n${qemuStderr}`);
  } finally {
    await agent?.close();
    if (qemu.exitCode === null && qemu.signalCode === null && qemu.pid !== undefined) {
      process.kill(qemu.pid, "SIGKILL");
    }
    await qemuExited;
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
