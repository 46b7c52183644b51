/**
 * Throughput of the snapshot store for one VM of `mib` MiB whose pages arrive in random order
 * (the worst case) or in address order (what QEMU mostly sends), half of them zero pages.
 * Used by store-throughput.test.ts; run alone for the design-note figures (node:test's async
 * context tracking slows promise-heavy code down, so figures from inside a test are lower):
 *   npx tsx test/unit/snapshot/store-bench.ts [MiB]
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SnapshotStore } from "../../../src/snapshot/store/index.ts";
import { Rng } from "./store-fixture.ts";

export interface BenchFigures {
  mib: number;
  order: "random" | "sequential";
  writeMiBps: number;
  commitMs: number;
  /** Guest RAM per second from the first page to the committed snapshot. */
  snapshotMiBps: number;
  verifyMiBps: number;
  /** Stored (non-zero) bytes per second through pages(). */
  scanMiBps: number;
  /** Mean latency of a readPage at a random page of a freshly opened snapshot. */
  faultUs: number;
  storedMiB: number;
}

const MiB = 1024 * 1024;

export async function runStoreBench(mib: number, order: "random" | "sequential"): Promise<BenchFigures> {
  const root = await mkdtemp(join(tmpdir(), "hr-store-bench-"));
  try {
    const store = new SnapshotStore(root);
    const pages = (mib * MiB) / 4096;
    const pool = Array.from({ length: 64 }, () => randomBytes(4096));
    const addresses = Array.from({ length: pages }, (_, page) => page);
    const sequence = order === "random" ? new Rng(31337).shuffle(addresses) : addresses;
    // Random order: every other page is zero. Address order: zero pages come in runs of 16.
    const isZero = (page: number): boolean => (order === "random" ? page % 2 === 0 : (page >> 4) % 2 === 0);

    let started = performance.now();
    const builder = await store.begin("bench");
    const vm = await builder.vm("big", [{ id: "pc.ram", usedLength: pages * 4096 }]);
    for (const page of sequence) {
      await vm.writePage("pc.ram", page * 4096, isZero(page) ? "zero" : (pool[page % 64] ?? "zero"));
    }
    const writeMs = performance.now() - started;
    await vm.setDeviceState(Buffer.alloc(100_000, 1));
    started = performance.now();
    const summary = await builder.commit();
    const commitMs = performance.now() - started;
    if (summary.vms[0]?.presentPages !== pages / 2) throw new Error("wrong number of stored pages");

    started = performance.now();
    const report = await store.verify("bench");
    const verifyMs = performance.now() - started;
    if (!report.ok) throw new Error(`verify: ${JSON.stringify(report.damages)}`);

    const reader = await store.open("bench");
    const memory = await reader.memory("big");
    started = performance.now();
    let seen = 0;
    for await (const { page } of memory.pages("pc.ram")) if (!isZero(page)) seen++;
    const scanMs = performance.now() - started;
    await reader.close();
    if (seen !== pages / 2) throw new Error("pages() missed pages");

    const fresh = await store.open("bench");
    const lazy = await fresh.memory("big");
    const faults = Math.min(4096, pages);
    const targets = new Rng(7).shuffle([...addresses]).slice(0, faults);
    started = performance.now();
    for (const page of targets) await lazy.readPage("pc.ram", page);
    const faultMs = performance.now() - started;
    await fresh.close();

    const bytes = pages * 4096;
    return {
      mib,
      order,
      writeMiBps: Math.round(bytes / MiB / (writeMs / 1000)),
      commitMs: Math.round(commitMs),
      snapshotMiBps: Math.round(bytes / MiB / ((writeMs + commitMs) / 1000)),
      verifyMiBps: Math.round(bytes / MiB / (verifyMs / 1000)),
      scanMiBps: Math.round(bytes / 2 / MiB / (scanMs / 1000)),
      faultUs: Math.round((faultMs * 1000) / faults),
      storedMiB: Math.round((summary.storedBytes / MiB) * 10) / 10,
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const mib = Number(process.argv[2] ?? "256");
  for (const order of ["random", "sequential"] as const)
    console.log(JSON.stringify(await runStoreBench(mib, order)));
}
