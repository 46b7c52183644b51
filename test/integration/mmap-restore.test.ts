import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { loadGuestImage, type GuestImage } from "../../src/image/image.ts";
import { VirtualSwitch } from "../../src/net/switch.ts";
import { loadFull } from "../../src/restore/vm/full.ts";
import { loadMmap, ram0Usage, type MmapLoadReport } from "../../src/restore/vm/mmap.ts";
import type { MmapVerify } from "../../src/restore/vm/mmap-verify.ts";
import { vmStreamSource } from "../../src/restore/vm/stream-source.ts";
import { SnapshotReader } from "../../src/snapshot/store/index.ts";
import type { VmSpec } from "../../src/spec/schema.ts";
import { validateSpec } from "../../src/spec/validate.ts";
import { HrError, isHrError } from "../../src/util/errors.ts";
import { silentLogger } from "../../src/util/log.ts";
import type { Accel } from "../../src/vm/argv.ts";
import { dropPageCache } from "../../src/util/page-cache.ts";
import { Vm } from "../../src/vm/vm.ts";
import { isAlive, Lab } from "./fixture.ts";

const COUNTER = "(i=0; while true; do i=$((i+1)); echo $i > /tmp/ctr; sleep 0.1; done) > /dev/null 2>&1 &";
const LOAD_TIMEOUT_MS = 120_000;
/** 192 MiB always; HR_MMAP_MIB=192,512 adds sizes to the figures. */
const SIZES = (process.env.HR_MMAP_MIB ?? "192").split(",").map(Number);
/** Rounds of the figures (median reported); HR_MMAP_ROUNDS=5 for steadier numbers. */
const ROUNDS = Math.max(1, Number(process.env.HR_MMAP_ROUNDS ?? "1"));

interface Taken {
  mib: number;
  name: string;
  path: string;
  spec: VmSpec;
  hosts: string;
  raw: string;
  rawSha256: string;
  counter: { before: number; after: number };
}

interface Restored {
  vm: Vm;
  report: MmapLoadReport | undefined;
  readyMs: number;
  latencyMs: number;
  answerMs: number;
  bytesBeforeStart: number;
  /** verify "background": how long the check ran next to the guest. */
  backgroundMs: number | undefined;
}

async function sha256(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

describe("mmap restore on real QEMU", () => {
  let lab: Lab;
  let image: GuestImage;
  let accel: Accel = "tcg";
  const taken = new Map<number, Taken>();
  const vms = new Set<Vm>();
  const switches: VirtualSwitch[] = [];
  let restores = 0;

  async function exec(vm: string, command: string): Promise<string> {
    const result = await lab.cli(["exec", vm, "--", command]);
    assert.equal(result.code, 0, `${vm}: ${command}: ${result.stderr}`);
    return result.stdout.trim();
  }

  async function guest(vm: Vm, command: string): Promise<string> {
    const result = await vm.exec(command, 60_000);
    assert.equal(result.exitCode, 0, `${command}: ${result.stderr.toString()}`);
    return result.stdout.toString().trim();
  }

  async function take(mib: number): Promise<Taken> {
    const name = `mm${mib}`;
    const spec = await lab.writeSpec({
      name,
      vms: [
        {
          name,
          memoryMiB: mib,
          workload: { kind: "mem", mib: 48, hotPercent: 15, touchesPerSec: 20000 },
        },
      ],
    });
    const up = await lab.cli(["up", spec]);
    assert.equal(up.code, 0, up.stderr);
    accel = (await lab.cliJson<{ accel: Accel }>(["status"])).accel;
    await exec(
      name,
      `dd if=/dev/urandom of=/tmp/blob bs=1M count=8 2>/dev/null && md5sum /tmp/blob > /tmp/blob.md5 && ${COUNTER}`,
    );
    await sleep(1_500);
    const before = Number(await exec(name, "cat /tmp/ctr"));
    const snap = await lab.cliJson<{ path: string }>(["snapshot", "--name", `s${mib}`]);
    const afterCut = Number(await exec(name, "cat /tmp/ctr"));
    const down = await lab.cli(["down"]);
    assert.equal(down.code, 0, down.stderr);
    const reader = await SnapshotReader.open(snap.path, `s${mib}`);
    const clusterSpec = validateSpec(reader.spec, "snapshot");
    const memory = await reader.memory(name);
    const raw = memory.rawPath("ram0");
    await reader.close();
    const vmSpec = clusterSpec.vms[0];
    assert.ok(vmSpec);
    return {
      mib,
      name: `s${mib}`,
      path: snap.path,
      spec: vmSpec,
      hosts: clusterSpec.vms.map((vm) => `${vm.name}:${vm.ip}`).join(","),
      raw,
      rawSha256: await sha256(raw),
      counter: { before, after: afterCut },
    };
  }

  /** One restore, timed from QEMU's spawn: `cont` sent, then the first agent answer. */
  async function restore(
    snap: Taken,
    strategy: "mmap" | "full",
    verify: MmapVerify,
    options: { cold?: boolean; onDamage?: (error: HrError) => void; cont?: boolean } = {},
  ): Promise<Restored> {
    if (options.cold ?? true) await dropPageCache(snap.path);
    restores += 1;
    const dir = join(lab.home, "restores", String(restores));
    const sw = new VirtualSwitch({ dir: join(dir, "switch") });
    switches.push(sw);
    const netSocket = await sw.addPort(snap.spec.name);
    const vm = new Vm(snap.spec, join(dir, "vm"), silentLogger());
    vms.add(vm);
    const snapshot = await SnapshotReader.open(snap.path, snap.name);
    const source = await vmStreamSource(snapshot, snap.spec.name);
    const start = { accel, image, netSocket, hosts: snap.hosts, disk: undefined };
    try {
      const spawnedAt = performance.now();
      let report: MmapLoadReport | undefined;
      let bytesBeforeStart: number;
      if (strategy === "mmap") {
        report = await loadMmap(vm, start, source, snapshot, {
          verify,
          timeoutMs: LOAD_TIMEOUT_MS,
          ...(options.onDamage === undefined ? {} : { onDamage: options.onDamage }),
        });
        bytesBeforeStart = report.bytesReadBeforeStart;
      } else {
        await vm.start({ ...start, incoming: true });
        bytesBeforeStart = (await loadFull(vm, source, LOAD_TIMEOUT_MS)).bytes;
      }
      const readyMs = performance.now() - spawnedAt;
      if (options.cont === false) {
        const backgroundMs = (await report?.background?.done)?.ms;
        return { vm, report, readyMs, latencyMs: 0, answerMs: 0, bytesBeforeStart, backgroundMs };
      }
      await vm.qmp.execute("cont");
      vm.markRunning();
      const latencyMs = performance.now() - spawnedAt;
      await vm.agent.waitReady(30_000);
      const answerMs = performance.now() - spawnedAt;
      // the background check reads the memory image: keep it open until the check is over
      const backgroundMs = (await report?.background?.done)?.ms;
      return { vm, report, readyMs, latencyMs, answerMs, bytesBeforeStart, backgroundMs };
    } finally {
      await source.memory.close();
      await snapshot.close();
    }
  }

  async function stop(vm: Vm): Promise<void> {
    await vm.stop();
    vms.delete(vm);
  }

  function first(): Taken {
    const snap = taken.get(SIZES[0] ?? 192);
    assert.ok(snap, "the snapshot was taken");
    return snap;
  }

  before(async () => {
    lab = await Lab.create("hr-it-mmap-");
    image = await loadGuestImage();
    for (const mib of SIZES) taken.set(mib, await take(mib));
  });

  after(async () => {
    for (const vm of vms) await vm.stop();
    for (const sw of switches) await sw.close().catch(() => undefined);
    await lab.cleanup();
  });

  it("restores with guest RAM mapped from the snapshot: data intact, counter continues, writes are private", async () => {
    const snap = first();
    const { vm, report } = await restore(snap, "mmap", "before-start");
    assert.ok(report);
    assert.ok(report.ram0AtReady, "ram0 is a file mapping of the snapshot's raw image");
    assert.equal(report.ram0AtReady.sizeBytes, snap.mib * 1024 * 1024);
    assert.equal(report.ram0AtReady.dirtyBytes, 0, "QEMU wrote nothing into guest RAM before cont");
    assert.ok(report.bytes < 4 * 1024 * 1024, `the stream carries no ram0 page (${report.bytes} bytes)`);
    assert.match(await guest(vm, "md5sum -c /tmp/blob.md5"), /OK/);
    const counter = Number(await guest(vm, "cat /tmp/ctr"));
    assert.ok(counter >= snap.counter.before, `counter ${counter} went back before the cut`);
    assert.ok(counter < snap.counter.after + 30, `counter ${counter} is later than the cut`);
    await sleep(600);
    assert.ok(Number(await guest(vm, "cat /tmp/ctr")) > counter, "the counter keeps counting");
    // copy-on-write: the guest writes 24 MiB of fresh memory and reads it back
    const written = await guest(
      vm,
      "dd if=/dev/urandom of=/tmp/cow bs=1M count=24 2>/dev/null && md5sum /tmp/cow | cut -d' ' -f1",
    );
    assert.equal(await guest(vm, "md5sum /tmp/cow | cut -d' ' -f1"), written);
    const usage = await ram0Usage(vm, snap.raw);
    assert.ok(usage && usage.dirtyBytes >= 24 * 1024 * 1024, "guest writes became private pages");
    assert.equal(await sha256(snap.raw), snap.rawSha256, "the snapshot's ram0.raw is unchanged");
    await stop(vm);
  });

  it("a second mmap restore of the same snapshot works, even next to a running one", async () => {
    const snap = first();
    const one = await restore(snap, "mmap", "off");
    const two = await restore(snap, "mmap", "background", { cold: false });
    assert.equal(two.report?.background !== undefined, true);
    const verdict = await two.report?.background?.done;
    assert.equal(verdict?.status, "intact");
    await guest(one.vm, "echo one > /tmp/who");
    await guest(two.vm, "echo two > /tmp/who");
    assert.equal(await guest(one.vm, "cat /tmp/who"), "one");
    assert.equal(await guest(two.vm, "cat /tmp/who"), "two", "each guest has its own copy of what it writes");
    for (const vm of [one.vm, two.vm]) assert.match(await guest(vm, "md5sum -c /tmp/blob.md5"), /OK/);
    await stop(one.vm);
    await stop(two.vm);
    assert.equal(await sha256(snap.raw), snap.rawSha256);
  });

  it("a damaged ram0.raw is refused before the guest runs, and stops a guest checked in the background", async () => {
    const snap = first();
    const file = await open(snap.raw, "r+");
    const page = Buffer.alloc(4096);
    let offset = -1;
    for (let at = 0; offset < 0; at += 4096) {
      const { bytesRead } = await file.read(page, 0, 4096, at);
      assert.equal(bytesRead, 4096, "ram0.raw has a non-zero page");
      const inPage = page.findIndex((byte) => byte !== 0);
      if (inPage >= 0) offset = at + inPage;
    }
    const original = page[offset % 4096] ?? 0;
    await file.write(Buffer.from([original ^ 0x5a]), 0, 1, offset);
    try {
      let refused: unknown;
      let pid: number | undefined;
      await restore(snap, "mmap", "before-start", { cont: false }).then(
        (restored) => {
          pid = restored.vm.pid;
        },
        (error: unknown) => {
          refused = error;
        },
      );
      assert.ok(isHrError(refused, "SNAPSHOT_CORRUPT"), `refused with SNAPSHOT_CORRUPT: ${String(refused)}`);
      assert.match((refused as Error).message, /ram0\.raw/);
      assert.equal(pid, undefined);
      assert.deepEqual(await lab.waitNoProcesses(5_000), [], "no QEMU left running on the damaged snapshot");

      const damages: HrError[] = [];
      const background = await restore(snap, "mmap", "background", {
        cont: false,
        onDamage: (error) => damages.push(error),
      });
      const verdict = await background.report?.background?.done;
      assert.equal(verdict?.status, "damaged");
      assert.equal(damages.length, 1);
      assert.match(damages[0]?.message ?? "", /ram0\.raw.*stopped/);
      assert.equal(background.vm.pid === undefined || !isAlive(background.vm.pid), true, "QEMU was stopped");
      vms.delete(background.vm);
    } finally {
      await file.write(Buffer.from([original]), 0, 1, offset);
      await file.close();
    }
    assert.equal(await sha256(snap.raw), snap.rawSha256);
  });

  it("measures restore latency and time to first answer against full, cold page cache", async () => {
    const rows: string[] = [];
    const runs: [string, "mmap" | "full", MmapVerify][] = [
      ["full", "full", "off"],
      ["mmap verify=off", "mmap", "off"],
      ["mmap verify=before-start", "mmap", "before-start"],
      ["mmap verify=background", "mmap", "background"],
    ];
    for (const snap of taken.values()) {
      const figures = new Map<string, Restored[]>();
      // rounds interleave the strategies, so a busy moment of the machine hits each of them
      for (let round = 0; round < ROUNDS; round += 1) {
        for (const [label, strategy, verify] of runs) {
          const restored = await restore(snap, strategy, verify);
          assert.match(await guest(restored.vm, "md5sum -c /tmp/blob.md5"), /OK/);
          await stop(restored.vm);
          figures.set(label, [...(figures.get(label) ?? []), restored]);
        }
      }
      for (const [label] of runs) {
        const all = figures.get(label) ?? [];
        const check = all.flatMap((one) => (one.report?.verifyMs === undefined ? [] : [one.report]));
        const background = all.flatMap((one) => (one.backgroundMs === undefined ? [] : [one.backgroundMs]));
        rows.push(
          [
            `${snap.mib} MiB`.padEnd(8),
            label.padEnd(26),
            `ready ${ms(median(all.map((one) => one.readyMs)))}`,
            `cont ${ms(median(all.map((one) => one.latencyMs)))}`,
            `answer ${ms(median(all.map((one) => one.answerMs)))}`,
            `read before start ${mib(median(all.map((one) => one.bytesBeforeStart)))}`,
            checkNote(check, background),
          ].join("  "),
        );
      }
      const full = median((figures.get("full") ?? []).map((one) => one.bytesBeforeStart));
      const mmap = median((figures.get("mmap verify=off") ?? []).map((one) => one.bytesBeforeStart));
      assert.ok(mmap * 20 < full, `mmap reads a small fraction of what full reads (${mmap} vs ${full})`);
    }
    console.log(
      `\nrestore from QEMU spawn, cold page cache, accel ${accel}, median of ${ROUNDS}:\n${rows.join("\n")}\n`,
    );
    for (const snap of taken.values()) {
      assert.equal(await sha256(snap.raw), snap.rawSha256, `${snap.name}: ram0.raw unchanged`);
    }
  });
});

/** How long the memory check took: before start (and how long `cont` waited), or next to the guest. */
function checkNote(before: readonly MmapLoadReport[], background: readonly number[]): string {
  if (before.length > 0) {
    const took = median(before.map((report) => report.verifyMs ?? 0));
    return `check ${ms(took)} (cont waited ${ms(median(before.map((report) => report.verifyWaitMs)))})`;
  }
  if (background.length > 0) return `check ${ms(median(background))} next to the guest`;
  return "";
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

function ms(value: number): string {
  return `${Math.round(value)} ms`.padStart(8);
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`.padStart(10);
}
