import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { parsePcap } from "../../src/net/pcap.ts";
import { Lab } from "./fixture.ts";

interface Status {
  cluster: string;
  accel: string;
  vms: {
    name: string;
    state: string;
    ip: string;
    memoryMiB: number;
    pid: number;
    workloads?: Record<string, Record<string, number>>;
  }[];
  traffic: { from: string; to: string; frames: number; bytes: number }[];
  flows: {
    key: string;
    a: { vm: string; port: number };
    b: { vm: string; port: number };
    ab: { payloadBytes: number; retransmissions: number };
    ba: { payloadBytes: number };
  }[];
}

/** One 3-VM cluster for the whole file (a TCG boot costs ~10 s a VM); the last test takes it down. */
describe("a 3-VM cluster on real QEMU and our switch", () => {
  let lab: Lab;
  before(async () => {
    lab = await Lab.create();
    const spec = await lab.writeSpec({
      name: "it",
      vms: [
        { name: "db", memoryMiB: 192, diskMiB: 64 },
        {
          name: "app",
          memoryMiB: 192,
          workload: { kind: "tcp-stream", to: "db", port: 7001, rateKiBps: 128 },
        },
        { name: "web", memoryMiB: 160, workload: { kind: "mem", mib: 32, hotPercent: 20 } },
      ],
    });
    const up = await lab.cli(["up", spec]);
    assert.equal(up.code, 0, `up failed: ${up.stderr}`);
  });
  after(async () => {
    await lab.cleanup();
  });

  it("status --json lists every VM running, with accel, IP and memory", async () => {
    const status = await lab.cliJson<Status>(["status"]);
    assert.equal(status.cluster, "it");
    assert.ok(["tcg", "kvm"].includes(status.accel));
    assert.deepEqual(
      status.vms.map((vm) => [vm.name, vm.state, vm.ip, vm.memoryMiB]),
      [
        ["db", "running", "10.0.0.2", 192],
        ["app", "running", "10.0.0.3", 192],
        ["web", "running", "10.0.0.4", 160],
      ],
    );
  });

  it("VMs ping each other by name through the switch", async () => {
    for (const [from, to] of [
      ["app", "db"],
      ["web", "app"],
      ["db", "web"],
    ] as const) {
      const ping = await lab.cli(["exec", from, "--", `ping -c 2 -W 5 ${to}`]);
      assert.equal(ping.code, 0, `${from} -> ${to}: ${ping.stdout}${ping.stderr}`);
      assert.match(ping.stdout, /2 packets received/);
    }
  });

  it("a TCP flow shows in the traffic matrix, the flow table and the workload's counters", async () => {
    let status = await lab.cliJson<Status>(["status", "--workloads"]);
    const deadline = Date.now() + 60_000;
    const appToDb = (s: Status) => s.traffic.find((t) => t.from === "app" && t.to === "db");
    while ((appToDb(status)?.bytes ?? 0) < 200_000 && Date.now() < deadline) {
      await sleep(1_000);
      status = await lab.cliJson<Status>(["status", "--workloads"]);
    }
    assert.ok((appToDb(status)?.bytes ?? 0) >= 200_000, JSON.stringify(status.traffic));
    assert.ok(
      (status.traffic.find((t) => t.from === "db" && t.to === "app")?.frames ?? 0) > 0,
      "ACKs flow back",
    );
    const flow = status.flows.find(
      (f) => f.a.port === 7001 && f.a.vm === "db" && f.b.vm === "app" && f.ba.payloadBytes > 0,
    );
    assert.ok(flow, JSON.stringify(status.flows.map((f) => f.key)));
    const sink = status.vms.find((vm) => vm.name === "db")?.workloads?.["stream-recv-7001"];
    const sender = status.vms.find((vm) => vm.name === "app")?.workloads?.["stream-send-db-7001"];
    assert.ok(sink && sender, "both ends report statistics");
    assert.ok((sink.seq ?? 0) > 100 && sink.seqErrors === 0, JSON.stringify(sink));
    assert.ok((sender.rateBps ?? 0) > 0, JSON.stringify(sender));
    const mem = status.vms.find((vm) => vm.name === "web")?.workloads?.["mem-0"];
    assert.ok(mem && (mem.touches ?? 0) > 0, JSON.stringify(mem));
  });

  it("exec returns output, stderr and the exit code", async () => {
    const result = await lab.cli(["exec", "db", "--", "echo out; echo err >&2; exit 7"]);
    assert.equal(result.code, 7);
    assert.equal(result.stdout, "out\n");
    assert.equal(result.stderr, "err\n");
    const ok = await lab.cli(["exec", "web", "--", "hostname"]);
    assert.equal(ok.code, 0);
    assert.equal(ok.stdout, "web\n");
  });

  it("exec with a timeout stops the command and says so", async () => {
    const result = await lab.cli(["exec", "--timeout", "1000", "app", "--", "sleep 30"]);
    assert.equal(result.code, 124);
    assert.match(result.stderr, /timed out/);
  });

  it("exec on an unknown VM names it", async () => {
    const result = await lab.cli(["exec", "nope", "--", "true"]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /no VM named 'nope'/);
  });

  it("the disk is formatted by the guest and mounted at /data", async () => {
    const result = await lab.cli([
      "exec",
      "db",
      "--",
      "grep ' /data ' /proc/mounts && echo kept > /data/f && sync && cat /data/f",
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /\/data/);
    assert.match(result.stdout, /kept/);
  });

  it("capture writes a VM's frames to a pcap file", async () => {
    const file = join(lab.home, "app.pcap");
    const result = await lab.cli(["capture", "app", file, "--seconds", "2"]);
    assert.equal(result.code, 0, result.stderr);
    const { records } = parsePcap(await readFile(file));
    assert.ok(records.length > 10, `${records.length} frames captured`);
    assert.match(result.stdout, /frames written/);
  });

  it("a second up is refused while the cluster runs", async () => {
    const spec = await lab.writeSpec({ name: "other", vms: [{ name: "x", memoryMiB: 128 }] });
    const result = await lab.cli(["up", spec]);
    assert.equal(result.code, 1);
    assert.match(result.stderr, /already running/);
  });

  it("down stops every QEMU process", async () => {
    const before = await lab.processes();
    assert.equal(before.length, 3, "three QEMU processes ran");
    const result = await lab.cli(["down"]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await lab.waitNoProcesses(10_000), []);
  });
});
