/**
 * The page server and the `lazy` / `workingset` strategies against real QEMU 7.2 (TCG): a 1-VM
 * cluster (192 MiB, `mem` workload) is snapshotted with the CLI after writing an 8 MiB random blob
 * and starting a counter; then the snapshot is restored three times with loadLazy, each into a
 * fresh paused QEMU on a VirtualSwitch port:
 *   1. lazy       (stored working set measured, not used) → the fault order refines the working set
 *   2. workingset (the refined working set prefetched before start)
 *   3. lazy again (the refined working set measured: its recall must beat the stored one's)
 * and once with `full` (loadFull) as the baseline for the printed figures.
 * Each restore: the agent answers, the blob's md5 matches, the counter goes on from the cut,
 * every page is delivered (done, query-migrate completed). Figures are printed per strategy.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { loadGuestImage, type GuestImage } from "../../src/image/image.ts";
import { VirtualSwitch } from "../../src/net/switch.ts";
import { loadFull } from "../../src/restore/vm/full.ts";
import { loadLazy, type LazyReport, type LazyStrategy } from "../../src/restore/vm/lazy.ts";
import type { PageRef } from "../../src/restore/vm/page-server-space.ts";
import { vmStreamSource } from "../../src/restore/vm/stream-source.ts";
import { SnapshotStore, type SnapshotReader } from "../../src/snapshot/store/index.ts";
import type { VmSpec } from "../../src/spec/schema.ts";
import { validateSpec } from "../../src/spec/validate.ts";
import { silentLogger } from "../../src/util/log.ts";
import { Vm } from "../../src/vm/vm.ts";
import { Lab } from "./fixture.ts";

const COUNTER = "(i=0; while true; do i=$((i+1)); echo $i > /tmp/ctr; sleep 0.1; done) > /dev/null 2>&1 &";
const GUEST_TIMEOUT_MS = 120_000;

interface Figures {
  strategy: LazyStrategy;
  restoreLatencyMs: number;
  firstAnswerMs: number;
  doneMs: number;
  report: LazyReport;
}

let lab: Lab;
let image: GuestImage;
let sw: VirtualSwitch;
let snapshot: SnapshotReader;
let spec: VmSpec;
let counterBefore = 0;
let runs = 0;
const started: Vm[] = [];
const figures: Figures[] = [];

async function cliExec(command: string): Promise<string> {
  const result = await lab.cli(["exec", "a", "--", command]);
  assert.equal(result.code, 0, `${command}: ${result.stderr}`);
  return result.stdout.trim();
}

async function guest(vm: Vm, command: string): Promise<string> {
  const result = await vm.exec(command, GUEST_TIMEOUT_MS);
  assert.equal(result.exitCode, 0, `${command}: ${result.stderr.toString()}`);
  return result.stdout.toString().trim();
}

/** One restore with our code path; returns its figures and the refined working set. */
async function restore(
  strategy: LazyStrategy,
  workingSet: readonly PageRef[],
): Promise<{ figures: Figures; refined: PageRef[] }> {
  runs += 1;
  const vm = new Vm(spec, join(lab.home, `restore-${runs}`), silentLogger());
  started.push(vm);
  try {
    const netSocket = await sw.addPort(`a${runs}`);
    const source = await vmStreamSource(snapshot, "a");
    const t0Ns = process.hrtime.bigint();
    const t0 = performance.now();
    await vm.start({
      accel: "tcg",
      image,
      netSocket,
      hosts: `a:${spec.ip}`,
      disk: undefined,
      incoming: true,
    });
    const load = loadLazy(vm, source, { strategy, workingSet, t0Ns });
    await load.prepared;
    await vm.qmp.execute("cont");
    load.markStarted();
    const contAt = performance.now();
    const counter = Number(await guest(vm, "cat /tmp/ctr"));
    const firstAnswerAt = performance.now();
    assert.ok(counter >= counterBefore, `counter ${counter} went back before the cut (${counterBefore})`);
    const done = await load.done;
    const doneAt = performance.now();
    assert.equal((await vm.qmp.execute("query-migrate")).status, "completed");
    assert.match(await guest(vm, "md5sum -c /tmp/blob.md5"), /\/tmp\/blob: OK/);
    await sleep(500);
    const later = Number(await guest(vm, "cat /tmp/ctr"));
    assert.ok(later > counter, `the counter runs on (${counter} → ${later})`);
    const report = done.report;
    assert.equal(
      report.server.pagesWritten + report.server.pagesLeftZero,
      report.server.pagesTotal,
      "every page delivered or left zero",
    );
    assert.ok(report.server.pagesLeftZero > 0, "the guest's untouched RAM is not sent");
    assert.equal(report.pagesBeforeStart + report.pagesAfterStart, report.server.pagesWritten);
    return {
      figures: {
        strategy,
        restoreLatencyMs: Math.round(contAt - t0),
        firstAnswerMs: Math.round(firstAnswerAt - contAt),
        doneMs: Math.round(doneAt - t0),
        report,
      },
      refined: done.refinedWorkingSet,
    };
  } finally {
    await vm.stop();
  }
}

function print(label: string, f: Figures): void {
  const r = f.report;
  const ws = r.workingSet;
  const recall = ws.recall === null ? "-" : ws.recall.toFixed(3);
  const waste = ws.waste === null ? "-" : ws.waste.toFixed(3);
  console.log(
    `# ${label}: restore latency ${f.restoreLatencyMs} ms (prepared ${r.preparedMs} ms), first agent answer ` +
      `${f.firstAnswerMs} ms after cont, done ${f.doneMs} ms; faults ${r.faults} (${r.faultsAfterStart} after start), ` +
      `service p50 ${r.faultServiceUs.p50} µs p99 ${r.faultServiceUs.p99} µs max ${r.faultServiceUs.max} µs; ` +
      `pages before/after start ${r.pagesBeforeStart}/${r.pagesAfterStart} (prefetched ${r.prefetchPages}); ` +
      `working set ${ws.predicted} pages, recall ${recall} (${ws.basis}), waste ${waste}; ` +
      `QEMU blocktime ${r.blocktimeMs} ms`,
  );
}

void describe("page server: lazy and workingset restores of a real VM", () => {
  before(async () => {
    lab = await Lab.create("hr-it-ps-");
    image = await loadGuestImage();
    const specPath = await lab.writeSpec({
      name: "ps",
      vms: [
        {
          name: "a",
          memoryMiB: 192,
          workload: { kind: "mem", mib: 48, hotPercent: 15, touchesPerSec: 20000 },
        },
      ],
    });
    const up = await lab.cli(["up", specPath]);
    assert.equal(up.code, 0, up.stderr);
    await cliExec(
      `dd if=/dev/urandom of=/tmp/blob bs=1M count=8 2>/dev/null && md5sum /tmp/blob > /tmp/blob.md5 && ${COUNTER}`,
    );
    await sleep(1_500);
    counterBefore = Number(await cliExec("cat /tmp/ctr"));
    const snap = await lab.cli(["snapshot", "--name", "s1", "--json"]);
    assert.equal(snap.code, 0, snap.stderr);
    const down = await lab.cli(["down"]);
    assert.equal(down.code, 0, down.stderr);
    snapshot = await new SnapshotStore(join(lab.home, "snapshots")).open("s1");
    const vmSpec = validateSpec(snapshot.spec, "snapshot s1").vms[0];
    assert.ok(vmSpec);
    spec = vmSpec;
    sw = new VirtualSwitch({ dir: join(lab.home, "switch") });
  });

  after(async () => {
    for (const vm of started) await vm.stop();
    await sw?.close();
    await snapshot?.close();
    await lab?.cleanup();
  });

  let stored: PageRef[] = [];
  let refined: PageRef[] = [];

  void it("lazy: restores on demand, continues from the cut, and refines the working set", async () => {
    stored = await snapshot.workingSet("a");
    const run = await restore("lazy", stored);
    figures.push(run.figures);
    print("lazy", run.figures);
    assert.ok(run.figures.report.faults > 0, "the guest faulted pages in");
    assert.equal(run.figures.report.prefetchPages, 0);
    refined = run.refined;
    assert.ok(refined.length >= run.figures.report.workingSet.faulted);
    await snapshot.replaceWorkingSet("a", refined);
    assert.equal((await snapshot.workingSet("a")).length, refined.length, "stored atomically");
  });

  void it("workingset: prefetches the refined working set before start", async () => {
    assert.ok(refined.length > 0, "needs the lazy restore's refinement");
    const run = await restore("workingset", refined);
    figures.push(run.figures);
    print("workingset", run.figures);
    assert.ok(run.figures.report.prefetchPages > 0);
    assert.ok(run.figures.report.pagesBeforeStart >= run.figures.report.prefetchPages);
  });

  void it("baseline: a full restore of the same snapshot (figures only)", async () => {
    runs += 1;
    const vm = new Vm(spec, join(lab.home, `restore-${runs}`), silentLogger());
    started.push(vm);
    try {
      const netSocket = await sw.addPort(`a${runs}`);
      const source = await vmStreamSource(snapshot, "a");
      const t0 = performance.now();
      await vm.start({
        accel: "tcg",
        image,
        netSocket,
        hosts: `a:${spec.ip}`,
        disk: undefined,
        incoming: true,
      });
      await loadFull(vm, source, 600_000);
      await vm.qmp.execute("cont");
      const contAt = performance.now();
      assert.ok(Number(await guest(vm, "cat /tmp/ctr")) >= counterBefore);
      const firstAnswerAt = performance.now();
      assert.match(await guest(vm, "md5sum -c /tmp/blob.md5"), /\/tmp\/blob: OK/);
      console.log(
        `# full: restore latency ${Math.round(contAt - t0)} ms, first agent answer ` +
          `${Math.round(firstAnswerAt - contAt)} ms after cont (every page loaded before start)`,
      );
    } finally {
      await vm.stop();
    }
  });

  void it("a second lazy restore: the refined working set predicts the faults better", async () => {
    assert.ok(refined.length > 0, "needs the lazy restore's refinement");
    const run = await restore("lazy", refined);
    figures.push(run.figures);
    print("lazy, refined working set", run.figures);
    const before = figures[0]?.report.workingSet.recall ?? 0;
    const after = run.figures.report.workingSet.recall ?? 0;
    console.log(`# working-set recall: stored ${before.toFixed(3)} → refined ${after.toFixed(3)}`);
    assert.ok(after > before, `recall ${after} is not above ${before}`);
  });
});
