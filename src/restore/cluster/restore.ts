import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Cluster } from "../../cluster/cluster.ts";
import type { GuestImage } from "../../image/image.ts";
import { overlayDisk } from "../../snapshot/disk.ts";
import type { SnapshotReader } from "../../snapshot/store/index.ts";
import { validateSpec } from "../../spec/validate.ts";
import { HrError, messageOf } from "../../util/errors.ts";
import type { Logger } from "../../util/log.ts";
import type { Accel } from "../../vm/argv.ts";
import { restoreVm, type Strategy, type VmRestoreFigures, type VmRestoreHandle } from "../vm/strategy.ts";
import { vmStreamSource } from "../vm/stream-source.ts";

/**
 * Restores a whole cluster from a snapshot: a fresh switch whose ports hold every frame, the
 * frames that were in flight at the cut queued on them, one paused QEMU per VM loading its state,
 * then every VM started (`cont`), the switch released, and `announce-self` so the network
 * relearns where each MAC lives. Any failure stops every process the restore started.
 */
export type { Strategy } from "../vm/strategy.ts";
export type Order = "simultaneous";

export interface RestoreOptions {
  dir: string;
  image: GuestImage;
  accel: Accel;
  log: Logger;
  strategy: Strategy;
  /** performance.now() when the restore command arrived: every figure is relative to it. */
  commandAt: number;
  progress?: (note: { step: string; vm?: string; detail?: string }) => void;
}

export interface RestoreReport {
  snapshot: string;
  strategy: Strategy;
  order: Order;
  restoreLatencyMs: number;
  inflightFrames: number;
  vms: RestoreVmReport[];
}

/** Per VM: when it started, plus its strategy's figures (VmRestoreFigures, `doneMs` renamed). */
export type RestoreVmReport = {
  name: string;
  restoreLatencyMs: number;
  startedMs: number;
  readyMs: number;
  bytesLoaded: number;
  backgroundDoneMs: number | null;
} & Omit<VmRestoreFigures, "doneMs">;

export const LOAD_TIMEOUT_MS = 600_000;
export const DISK_FILE = "disk.qcow2";

export async function restoreCluster(
  snapshot: SnapshotReader,
  options: RestoreOptions,
): Promise<{ cluster: Cluster; report: RestoreReport }> {
  const progress = options.progress ?? (() => undefined);
  const name = snapshot.manifest.name;
  const spec = validateSpec(snapshot.spec, `snapshot ${name}`);
  const stored = [...snapshot.vmNames()].sort();
  const wanted = spec.vms.map((vm) => vm.name).sort();
  if (stored.join(",") !== wanted.join(",")) {
    throw new HrError(
      "SNAPSHOT_MISMATCH",
      `snapshot ${name}: it holds VMs [${stored.join(", ")}] but its spec names [${wanted.join(", ")}]`,
      { hint: "the snapshot is damaged; take a new one" },
    );
  }
  const cluster = await Cluster.prepare(spec, {
    dir: options.dir,
    sourceDoc: snapshot.spec,
    image: options.image,
    accel: options.accel,
    log: options.log,
  });
  const since = (): number => Math.round(performance.now() - options.commandAt);
  try {
    const sw = cluster.switch;
    const inflight = await snapshot.inflight();
    const sockets = new Map<string, string>();
    for (const vm of cluster.vms.values()) {
      sockets.set(vm.spec.name, await sw.addPort(vm.spec.name, { holdWhileDisconnected: true }));
      sw.hold(vm.spec.name);
    }
    for (const frame of inflight) sw.inject(frame.to, [frame.data]);

    const handles = new Map<string, VmRestoreHandle>();
    const readyAt = new Map<string, number>();
    await Promise.all(
      [...cluster.vms.values()].map(async (vm) => {
        const source = await vmStreamSource(snapshot, vm.spec.name);
        let disk: string | undefined;
        if (snapshot.vmFileNames(vm.spec.name).includes(DISK_FILE)) {
          await snapshot.verifyVmFile(vm.spec.name, DISK_FILE);
          await mkdir(vm.dir, { recursive: true, mode: 0o700 });
          disk = join(vm.dir, "disk.qcow2");
          await overlayDisk(snapshot.vmFilePath(vm.spec.name, DISK_FILE), disk);
        }
        progress({ step: "load", vm: vm.spec.name });
        const handle = restoreVm(options.strategy, {
          vm,
          start: {
            accel: options.accel,
            image: options.image,
            netSocket: sockets.get(vm.spec.name) ?? "",
            hosts: cluster.hosts,
            disk,
          },
          snapshot,
          source,
          commandAt: options.commandAt,
          timeoutMs: LOAD_TIMEOUT_MS,
        });
        handles.set(vm.spec.name, handle);
        await handle.ready;
        readyAt.set(vm.spec.name, since());
        const figures = handle.figures();
        progress({
          step: "ready",
          vm: vm.spec.name,
          detail: `${figures.pagesBeforeStart} pages in ${figures.loadMs} ms`,
        });
      }),
    );

    const started = new Map<string, number>();
    await Promise.all(
      [...cluster.vms.values()].map(async (vm) => {
        await vm.qmp.execute("cont");
        handles.get(vm.spec.name)?.started();
        vm.markRunning();
        started.set(vm.spec.name, since());
      }),
    );
    sw.releaseAll();
    const restoreLatencyMs = since();
    await Promise.all(
      [...cluster.vms.values()].map((vm) =>
        vm.qmp
          .execute("announce-self", { initial: 50, max: 550, rounds: 3, step: 100 })
          .catch((error: unknown) =>
            options.log.warn({ err: error, vm: vm.spec.name }, "announce-self failed"),
          ),
      ),
    );
    progress({ step: "running", detail: `every VM running ${restoreLatencyMs} ms after the command` });
    // Lazy strategies go on loading in the background: the report waits for them, and each
    // restore refines the snapshot's working set with the order in which its guest faulted.
    await Promise.all([...handles.values()].map((handle) => handle.finished));
    for (const [vm, handle] of handles) {
      const refined = handle.refinedWorkingSet();
      if (refined !== undefined && refined.length > 0) await snapshot.replaceWorkingSet(vm, refined);
    }
    const report: RestoreReport = {
      snapshot: name,
      strategy: options.strategy,
      order: "simultaneous",
      restoreLatencyMs,
      inflightFrames: inflight.length,
      vms: spec.vms.map((vm): RestoreVmReport => {
        const handle = handles.get(vm.name);
        if (!handle) throw new HrError("RESTORE_FAILED", `VM ${vm.name} was never restored`);
        const { doneMs, ...figures } = handle.figures();
        return {
          name: vm.name,
          restoreLatencyMs: started.get(vm.name) ?? restoreLatencyMs,
          startedMs: started.get(vm.name) ?? restoreLatencyMs,
          readyMs: readyAt.get(vm.name) ?? 0,
          bytesLoaded: figures.bytesBeforeStart + figures.bytesAfterStart,
          backgroundDoneMs: doneMs,
          ...figures,
        };
      }),
    };
    return { cluster, report };
  } catch (error) {
    options.log.error({ err: error }, "restore failed; stopping every VM it started");
    await cluster.down();
    throw error instanceof HrError
      ? error
      : new HrError("RESTORE_FAILED", `restore of ${name} failed: ${messageOf(error)}`, { cause: error });
  }
}
