import { open, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Cluster } from "../cluster/cluster.ts";
import { MigrationStreamReader, type MigrationEvent } from "../migration/index.ts";
import { setTimeout as sleep } from "node:timers/promises";
import {
  BackoffTracker,
  flowsActiveAtCut,
  type BackoffReport,
  type FlowBackoff,
} from "../metrics/backoff.ts";
import { formatMac } from "../net/mac.ts";
import type { TcpEvent } from "../net/traffic-monitor.ts";
import { HrError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { RAM_BLOCK_ID } from "../vm/argv.ts";
import type { Vm } from "../vm/vm.ts";
import { captureMigration, type MigrationStats } from "./capture.ts";
import { atVm, rootCause, snapshotFailed } from "./cut-errors.ts";
import { exportDisk, freezeDisk } from "./disk.ts";
import type {
  SnapshotBuilder,
  SnapshotStore,
  SnapshotSummary,
  VmSnapshotWriter,
  WorkingSetEntry,
} from "./store/index.ts";
import { writesAfterCut, type PageRef } from "./working-set.ts";

/**
 * A consistent snapshot of a running cluster (DESIGN.md §3):
 *   1. the switch holds every frame (forwards nothing);
 *   2. every VM stops (parallel QMP `stop`): this instant is the cut;
 *   3. the frames held at that moment are the channel state, saved with the snapshot;
 *   4. disks are frozen at the cut (a new qcow2 overlay takes the writes from now on);
 *   5. each VM's memory and devices are saved with QEMU's background-snapshot: QEMU saves the
 *      device state and resumes the VM itself, then writes RAM as of the cut (copy-before-write).
 *      A VM whose guest RAM maps a file (restored by `mmap` or on kernel paging) cannot be
 *      write-protected (the kernel's userfaultfd tracks anonymous and shmem memory only): it stays
 *      stopped while QEMU writes its whole state, and we resume it (stop-and-copy);
 *   6. each VM's port is released when that VM runs again, so no frame sent after the cut reaches
 *      a VM whose state is not saved yet; pause = hold → the last release;
 *   7. the RAM streams are parsed into the store as they arrive; disks are exported; commit.
 * On failure every VM's migration is cancelled and its capture awaited, every VM resumed, the
 * switch released and the half snapshot removed; the error names the snapshot (cut-errors.ts).
 */
export interface SnapshotReport {
  name: string;
  path: string;
  pauseMs: number;
  durationMs: number;
  storedBytes: number;
  vms: {
    name: string;
    pauseMs: number;
    /** "live": background snapshot; "stopped": stop-and-copy (guest RAM maps a file). */
    saved: "live" | "stopped";
    captureMs: number;
    /** Pages written after the cut (live), or kept from the VM's restore (stopped). */
    workingSetPages: number;
    migration: MigrationStats;
  }[];
  /**
   * TCP backoff caused by the snapshot's pause on the running cluster: per flow active at the cut,
   * VM resumed → first progress at the switch (the same measure as a restore's backoff).
   */
  resumeBackoff: Omit<BackoffReport, "flows"> & {
    flows: Omit<FlowBackoff, "segments">[];
    retransmits: number;
  };
}

export type Progress = (note: { step: string; vm?: string; detail?: string }) => void;

export const CAPTURE_TIMEOUT_MS = 600_000;
/** After one VM failed, how long the other VMs' captures get to end before the builder is aborted. */
const CANCEL_WAIT_MS = 60_000;

let diskGeneration = 0;

export async function snapshotCluster(
  cluster: Cluster,
  store: SnapshotStore,
  name: string,
  log: Logger,
  progress: Progress = () => undefined,
): Promise<SnapshotReport> {
  const started = performance.now();
  const builder = await store.begin(name);
  const vms = [...cluster.vms.values()];
  const sw = cluster.switch;
  let released = false;
  let onTcp: ((event: TcpEvent) => void) | undefined;
  let captures: { capture: Promise<VmCapture> }[] = [];
  try {
    builder.setSpec(cluster.sourceDoc);
    progress({ step: "cut", detail: "holding the switch and stopping every VM" });
    const holdAt = performance.now();
    sw.holdAll();
    const live = new BackoffTracker(flowsActiveAtCut(sw.flows()));
    const since = (): number => Math.round((performance.now() - holdAt) * 10) / 10;
    onTcp = (event: TcpEvent): void =>
      live.observe(
        event.observation.key,
        since(),
        event.observation.progress,
        event.observation.retransmission,
      );
    sw.on("tcp", onTcp);
    const stoppedAt = new Map<string, number>();
    await Promise.all(
      vms.map(async (vm) => {
        await atVm(vm.spec.name, "stop", vm.qmp.execute("stop"));
        stoppedAt.set(vm.spec.name, performance.now());
      }),
    );
    const senderOf = new Map(sw.macTable().map((entry) => [entry.mac, entry.port]));
    builder.setInflight(
      vms.flatMap((vm) =>
        sw.heldFrames(vm.spec.name).map((data) => ({
          to: vm.spec.name,
          from: data.length >= 12 ? (senderOf.get(formatMac(data, 6)) ?? "") : "",
          data,
        })),
      ),
    );
    // Flows as they stood at the cut: a restore loads them into its switch, so data the restored
    // guests send again counts as retransmission and only what is new counts as progress.
    builder.setTraffic(trafficAtCut(cluster));
    diskGeneration += 1;
    const frozen = await Promise.all(
      vms.map((vm) => atVm(vm.spec.name, "freezing the disk", freezeDisk(vm, diskGeneration))),
    );

    const resumedAt = new Map<string, number>();
    const capturing = vms.map((vm) => {
      // Stop-and-copy resumes only after the whole stream: as long as CAPTURE_TIMEOUT_MS.
      const background = !vm.fileBackedRam;
      const resume = vm.qmp.waitForEvent("RESUME", {
        timeoutMs: background ? 60_000 : CAPTURE_TIMEOUT_MS,
      });
      const resumed = atVm(vm.spec.name, "resuming", resume).then(() => {
        resumedAt.set(vm.spec.name, performance.now());
        live.started(vm.spec.name, since());
        sw.release(vm.spec.name);
      });
      const capture = captureVm(vm, builder, progress, background);
      capture.catch(() => undefined);
      return { vm, resumed, capture };
    });
    captures = capturing;
    await Promise.all(
      capturing.map(async ({ resumed, capture }) => Promise.race([resumed, capture.then(() => resumed)])),
    );
    const releasedAt = performance.now();
    released = true;
    progress({
      step: "resumed",
      detail: `cluster paused ${Math.round(releasedAt - holdAt)} ms; writing memory`,
    });

    const results = await Promise.all(capturing.map(({ capture }) => capture));
    await Promise.all(
      vms.map(async (vm, index) => {
        const file = frozen[index];
        if (file === undefined) return;
        progress({ step: "disk", vm: vm.spec.name });
        await builder.addVmFile(vm.spec.name, "disk.qcow2", async (destination: string) =>
          exportDisk(file, destination),
        );
      }),
    );
    const pauses: Record<string, number> = {};
    for (const vm of vms) {
      pauses[vm.spec.name] = Math.round(
        (resumedAt.get(vm.spec.name) ?? releasedAt) - (stoppedAt.get(vm.spec.name) ?? holdAt),
      );
    }
    const clusterPause = Math.round(releasedAt - holdAt);
    builder.setPause({ clusterMs: clusterPause, vms: pauses });
    progress({ step: "commit" });
    const summary: SnapshotSummary = await builder.commit();
    const horizon = performance.now() + 5_000;
    while (!live.complete && performance.now() < horizon) await sleep(20);
    const backoff = live.report();
    const report: SnapshotReport = {
      resumeBackoff: {
        ...backoff,
        flows: backoff.flows.map(({ segments: _segments, ...flow }) => flow),
        retransmits: live.retransmits,
      },
      name,
      path: store.pathOf(name),
      pauseMs: clusterPause,
      durationMs: Math.round(performance.now() - started),
      storedBytes: summary.storedBytes,
      vms: vms.map((vm, index) => ({
        name: vm.spec.name,
        pauseMs: pauses[vm.spec.name] ?? 0,
        saved: vm.fileBackedRam ? ("stopped" as const) : ("live" as const),
        captureMs: results[index]?.captureMs ?? 0,
        workingSetPages: results[index]?.workingSetPages ?? 0,
        migration: results[index]?.stats ?? emptyStats(),
      })),
    };
    log.info({ report }, "snapshot committed");
    return report;
  } catch (error) {
    log.error({ err: error }, "snapshot failed; resuming the cluster");
    // The other VMs' streams end on their own (capture.ts never cuts one midway: QEMU 7.2 would
    // deadlock the VM), into a builder still open; no migration may outlive the snapshot.
    const others = await Promise.race([
      Promise.all(
        captures.map(({ capture }) =>
          capture.then(
            () => undefined,
            (failure: unknown) => failure,
          ),
        ),
      ),
      sleep(CANCEL_WAIT_MS, [], { ref: false }),
    ]);
    await Promise.all(vms.map((vm) => resumeIfPaused(vm)));
    if (!released) sw.releaseAll();
    await builder.abort().catch(() => undefined);
    throw snapshotFailed(name, rootCause(error, others));
  } finally {
    if (onTcp !== undefined) sw.off("tcp", onTcp);
  }
}

function emptyStats(): MigrationStats {
  return {
    status: "none",
    totalTimeMs: undefined,
    downtimeMs: undefined,
    ramNormal: undefined,
    ramDuplicate: undefined,
  };
}

async function resumeIfPaused(vm: Vm): Promise<void> {
  try {
    const status = await vm.qmp.execute("query-status");
    if (status.status === "paused" || status.status === "postmigrate" || status.status === "finish-migrate") {
      await vm.qmp.execute("cont");
    }
  } catch {
    // the VM is gone; the caller reports the original error
  }
}

interface VmCapture {
  stats: MigrationStats;
  captureMs: number;
  workingSetPages: number;
}

/**
 * Streams one VM's state into the store: its background snapshot, or (`background` false) a
 * migration of the stopped VM, which is resumed once the stream is complete.
 */
async function captureVm(
  vm: Vm,
  builder: SnapshotBuilder,
  progress: Progress,
  background: boolean,
): Promise<VmCapture> {
  const started = performance.now();
  const reader = new MigrationStreamReader();
  let writer: VmSnapshotWriter | undefined;
  let configuration: Buffer | undefined;
  const blockIndex = new Map<string, number>();
  const blockPages: number[] = [];
  const order: PageRef[] = [];
  const handle = async (event: MigrationEvent): Promise<void> => {
    switch (event.type) {
      case "configuration":
        configuration = event.raw;
        return;
      case "ramBlocks": {
        event.blocks.forEach((block, index) => {
          blockIndex.set(block.id, index);
          blockPages.push(block.usedLength / 4096);
        });
        writer = await builder.vm(
          vm.spec.name,
          event.blocks.map((block) => ({ id: block.id, usedLength: block.usedLength })),
        );
        if (configuration) await writer.setConfiguration(configuration);
        await writer.setRamStart(event.raw);
        return;
      }
      case "page": {
        if (!writer) throw new HrError("MIGRATION_BAD_STREAM", "a page came before the RAM block list");
        order.push({ block: blockIndex.get(event.block) ?? 0, page: event.offset / 4096 });
        await writer.writePage(
          event.block,
          event.offset,
          event.kind === "zero" ? "zero" : (event.data ?? "zero"),
        );
        return;
      }
      case "deviceState":
        if (!writer) throw new HrError("MIGRATION_BAD_STREAM", "device state came before the RAM block list");
        await writer.setDeviceState(event.raw);
        return;
      default:
        return;
    }
  };
  const ingest = async (chunk: Buffer): Promise<void> => {
    for (const event of reader.push(chunk)) await handle(event);
  };
  const stats = background
    ? await captureMigration(vm, join(vm.dir, "snapshot.sock"), ingest, {
        background: true,
        timeoutMs: CAPTURE_TIMEOUT_MS,
      })
    : await stopAndCopy(vm, ingest);
  for (const event of reader.end()) await handle(event);
  if (!writer?.hasDeviceState()) {
    throw new HrError("SNAPSHOT_CAPTURE_FAILED", `VM ${vm.spec.name}: the stream had no device state`);
  }
  const blocks = [...blockIndex.keys()];
  // A stopped VM writes nothing after the cut: it keeps the working set it was restored with.
  const workingSet = background
    ? writesAfterCut(order, blockPages).map((ref) => ({
        blockId: blocks[ref.block] ?? RAM_BLOCK_ID,
        page: ref.page,
      }))
    : await carriedWorkingSet(vm, blockIndex);
  writer.setWorkingSet(workingSet);
  progress({
    step: "memory saved",
    vm: vm.spec.name,
    detail: background
      ? `${order.length} pages, ${workingSet.length} written after the cut`
      : `${order.length} pages while stopped; working set of ${workingSet.length} pages kept from its restore`,
  });
  return {
    stats,
    captureMs: Math.round(performance.now() - started),
    workingSetPages: workingSet.length,
  };
}

/**
 * Migrates the stopped VM into a spool file next to its sockets (at disk speed: the VM waits for
 * this part only), resumes it, then feeds the spooled stream to `ingest` (the store's pace:
 * checksums). Measured on a 512 MiB kernel-paged VM: paused 2.2-2.6 s when the store consumed the
 * stream directly, 1.45 s spooled (QEMU's own migration of the stopped VM is most of that).
 */
async function stopAndCopy(vm: Vm, ingest: (chunk: Buffer) => Promise<void>): Promise<MigrationStats> {
  const path = join(vm.dir, "snapshot.spool");
  const spool = await open(path, "w+", 0o600);
  try {
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const flush = async (): Promise<void> => {
      const data = Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      for (let at = 0; at < data.length;) at += (await spool.write(data, at)).bytesWritten;
    };
    const stats = await captureMigration(
      vm,
      join(vm.dir, "snapshot.sock"),
      async (chunk) => {
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (pendingBytes >= SPOOL_WRITE_BYTES) await flush();
      },
      { background: false, timeoutMs: CAPTURE_TIMEOUT_MS },
    );
    await flush();
    await atVm(vm.spec.name, "resuming", vm.qmp.execute("cont"));
    for (let at = 0; ;) {
      const chunk = Buffer.allocUnsafe(SPOOL_READ_BYTES);
      const { bytesRead } = await spool.read(chunk, 0, chunk.length, at);
      if (bytesRead === 0) break;
      at += bytesRead;
      await ingest(chunk.subarray(0, bytesRead));
    }
    return stats;
  } finally {
    await spool.close();
    await rm(path, { force: true });
  }
}

const SPOOL_READ_BYTES = 1024 * 1024;
const SPOOL_WRITE_BYTES = 8 * 1024 * 1024;

/** The working set the VM was restored with, limited to blocks this stream has; none if unreadable. */
async function carriedWorkingSet(
  vm: Vm,
  blockIndex: ReadonlyMap<string, number>,
): Promise<WorkingSetEntry[]> {
  const entries = (await vm.restoredWorkingSet?.().catch(() => undefined)) ?? [];
  return entries.filter((entry) => blockIndex.has(entry.blockId));
}

/** What the switch knows about traffic around the cut: log, matrix, flows and the graph's edges. */
function trafficAtCut(cluster: Cluster): Record<string, unknown> {
  const matrix = cluster.switch.traffic().filter((pair) => pair.to !== "*");
  return {
    matrix,
    flows: JSON.parse(JSON.stringify(cluster.switch.flows())) as unknown,
    log: JSON.parse(JSON.stringify(cluster.switch.trafficLog())) as unknown,
    graph: {
      edges: matrix.map((pair) => ({ from: pair.from, to: pair.to, bytes: pair.bytes, frames: pair.frames })),
    },
  };
}
