import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { after, before, describe, it, type TestContext } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { RestoreReport } from "../../src/restore/cluster/restore.ts";
import { Lab } from "./fixture.ts";

/**
 * Restore orders on real VMs (DESIGN.md §7–§9): a TCP chain a → b → c and a cycle c ⇄ d, with
 * different memory sizes so that their full restores take different times. `as-ready` (each VM
 * starts when its own restore is ready, frames for VMs not running dropped) makes the early
 * senders time out and back off; `restore-line` (receivers first, frames held) does not. Every
 * flow resumes without reconnecting. A VM killed mid-restore fails the restore cleanly.
 */
type Stats = { connects?: number; seqErrors?: number; seq?: number };
type Status = { vms: { name: string; workloads?: Record<string, Stats> }[] };

const FLOWS = [
  { from: "a", to: "b", port: 7101 },
  { from: "b", to: "c", port: 7102 },
  { from: "c", to: "d", port: 7103 },
  { from: "d", to: "c", port: 7104 },
];

describe("restore orders on a 4-VM cluster with a TCP chain and a cycle", () => {
  let lab: Lab;

  before(async () => {
    lab = await Lab.create();
    const stream = (vm: string) =>
      FLOWS.filter((flow) => flow.from === vm).map((flow) => ({
        kind: "tcp-stream",
        to: flow.to,
        port: flow.port,
        rateKiBps: 64,
      }));
    const spec = await lab.writeSpec({
      name: "orders",
      vms: [
        { name: "a", memoryMiB: 128, workloads: stream("a") },
        { name: "b", memoryMiB: 128, workloads: stream("b") },
        {
          name: "c",
          memoryMiB: 640,
          workloads: [...stream("c"), { kind: "mem", mib: 440, hotPercent: 10, touchesPerSec: 5000 }],
        },
        { name: "d", memoryMiB: 256, workloads: [...stream("d"), { kind: "mem", mib: 120, hotPercent: 10 }] },
      ],
    });
    const up = await lab.cli(["up", spec]);
    assert.equal(up.code, 0, up.stderr);
    await sleep(6_000); // the mem workloads fill their areas, the flows settle
    const snap = await lab.cli(["snapshot", "--name", "o1", "--json"]);
    assert.equal(snap.code, 0, snap.stderr);
  });
  after(async () => {
    await lab.cleanup();
  });

  async function restore(args: string[], t: TestContext): Promise<RestoreReport> {
    const result = await lab.cli(["restore", "o1", ...args, "--json"]);
    assert.equal(result.code, 0, result.stderr);
    const report = JSON.parse(result.stdout) as RestoreReport;
    const starts = report.vms.map((vm) => `${vm.name}@${vm.startedMs}`).join(" ");
    const flows = report.backoff.flows.map((f) => `${f.from}→${f.to} ${f.ms} ms`).join(", ");
    t.diagnostic(`${args.join(" ")}: starts ${starts}; backoff ${flows}; retransmits ${report.retransmits}`);
    return report;
  }

  async function flowsResumedWithoutReconnecting(): Promise<void> {
    const read = async () => lab.cliJson<Status>(["status", "--workloads"]);
    const sink = (s: Status, flow: (typeof FLOWS)[number]): Stats =>
      s.vms.find((vm) => vm.name === flow.to)?.workloads?.[`stream-recv-${flow.port}`] ?? {};
    const first = await read();
    await sleep(2_000);
    const second = await read();
    for (const flow of FLOWS) {
      const now = sink(second, flow);
      assert.equal(now.connects, 1, `${flow.from}→${flow.to} was reconnected`);
      assert.equal(now.seqErrors, 0, `${flow.from}→${flow.to} lost or reordered data`);
      assert.ok((now.seq ?? 0) > (sink(first, flow).seq ?? 0), `${flow.from}→${flow.to} moves data`);
    }
  }

  let asReady: RestoreReport | undefined;

  it("the dependency graph has the chain and the cycle", async () => {
    const graph = await lab.cliJson<{ graph: { components: string[][] } }>(["snapshot", "graph", "o1"]);
    const components = graph.graph.components.map((members) => [...members].sort().join(","));
    assert.ok(components.includes("c,d"), `c and d form one component: ${components.join(" | ")}`);
  });

  it("as-ready (the naive baseline) makes early senders time out and back off", async (t) => {
    const report = await restore(["--strategy", "full", "--order", "as-ready"], t);
    assert.equal(report.order, "as-ready");
    assert.equal(report.hold, false);
    const starts = report.vms.map((vm) => vm.startedMs);
    assert.ok(Math.max(...starts) - Math.min(...starts) > 300, `VMs start apart: ${starts.join(", ")}`);
    assert.ok(report.retransmits > 0, "retransmissions seen at the switch");
    assert.ok(report.droppedFrames > 0, "frames for VMs not yet running were dropped");
    // An early sender's segments are dropped while its receiver is not running: seen from the
    // sender, the flow is silent from its own start until the first progress. (How long the flow
    // then waits once both run depends on where its doubling timer stands, so it is not asserted.)
    const started = new Map(report.vms.map((vm) => [vm.name, vm.startedMs]));
    const silences = report.backoff.flows.map((flow) => {
      const from = started.get(flow.from) ?? 0;
      const both = Math.max(from, started.get(flow.to) ?? 0);
      return flow.ms === null ? Number.POSITIVE_INFINITY : both + flow.ms - from;
    });
    assert.ok(Math.max(...silences) >= 1000, `silences ${silences.join(", ")} ms`);
    asReady = report;
    await flowsResumedWithoutReconnecting();
  });

  it("restore-line (receivers first, frames held) drops nothing and retransmits less than as-ready", async (t) => {
    const report = await restore(["--strategy", "full"], t);
    assert.equal(report.order, "restore-line");
    assert.equal(report.hold, true);
    const started = new Map(report.vms.map((vm) => [vm.name, vm.startedMs]));
    const at = (vm: string): number => started.get(vm) ?? Number.NaN;
    assert.ok(at("b") <= at("a") && at("c") <= at("b"), "receivers start no later than their senders");
    // one decision starts both; their `cont` replies come back a QMP round trip apart
    assert.ok(
      Math.abs(at("c") - at("d")) < 150,
      `the cycle starts at one instant: c ${at("c")}, d ${at("d")}`,
    );
    assert.equal(report.droppedFrames, 0);
    assert.equal(report.backoff.stalledFlows, 0);
    // Not yet "no backoff" (issue 5 stays open on it): a flow can still be slow to show progress,
    // but nothing is dropped and far fewer segments are sent again than under as-ready.
    const baseline = asReady?.retransmits ?? Number.POSITIVE_INFINITY;
    assert.ok(
      report.retransmits < baseline,
      `retransmits ${report.retransmits} vs ${baseline} under as-ready`,
    );
    await flowsResumedWithoutReconnecting();
  });

  it("a VM killed mid-restore fails the restore cleanly, naming it", async () => {
    const old = new Set(await lab.processes());
    const running = lab.cli(["restore", "o1", "--strategy", "full"]);
    let killed = false;
    for (let i = 0; i < 400 && !killed; i += 1) {
      for (const pid of await lab.processes()) {
        if (old.has(pid)) continue;
        const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
        // the new QEMU of c, started paused for the restore
        if (cmdline.includes("/vms/c/") && cmdline.includes("-incoming")) {
          process.kill(pid, "SIGKILL");
          killed = true;
        }
      }
      if (!killed) await sleep(50);
    }
    assert.ok(killed, "found c's restoring QEMU");
    const result = await running;
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /VM c\b/);
    assert.deepEqual(await lab.waitNoProcesses(15_000), [], "no QEMU or helper left");
    const verify = await lab.cli(["snapshot", "verify", "o1"]);
    assert.equal(verify.code, 0, "the snapshot is untouched");
  });
});
