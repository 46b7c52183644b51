import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Cluster } from "../../cluster/cluster.ts";
import type { GuestImage } from "../../image/image.ts";
import type { TcpEvent } from "../../net/traffic-monitor.ts";
import { overlayDisk } from "../../snapshot/disk.ts";
import type { SnapshotReader } from "../../snapshot/store/index.ts";
import { HrError, messageOf } from "../../util/errors.ts";
import type { Logger } from "../../util/log.ts";
import type { Accel } from "../../vm/argv.ts";
import type { Vm } from "../../vm/vm.ts";
import { DEFAULT_W0_PAGES } from "../vm/lazy.ts";
import { DISK_FILE, preflightRestore, type RestoreInputs } from "./preflight.ts";
import type { Paging } from "../vm/kernel-paged.ts";
import { restoreVm, type Strategy, type VmRestoreFigures, type VmRestoreHandle } from "../vm/strategy.ts";
import { BackoffTracker, flowsActiveAtCut, type BackoffReport } from "../../metrics/backoff.ts";
import { syncGuestClock } from "./clock.ts";
import { tryMeasureResponsiveness } from "./responsiveness.ts";
import { StartGate, type Order } from "./start-gate.ts";

/**
 * Restores a whole cluster from a snapshot (DESIGN.md §8), as a coordinator with one restorer per
 * VM:
 *
 *   PREPARE (QEMU started paused, state loaded up to W0) ─► READY ─► START (`cont` when the order
 *   allows, StartGate) ─► RUNNING (frames for it delivered, announce-self, wall clock set) ─►
 *   DONE (every page in; the snapshot's working set refined)
 *
 * Frames for a VM that is not running are held and delivered in order the instant it starts
 * (`hold`, HotRestore's protocol, with the frames in flight at the cut re-injected), or dropped as
 * a host bridge drops frames for a tap whose VM is not running (the baselines). Backoff per TCP
 * flow is measured at the switch. Any failure stops every process the restore started, leaves
 * the snapshot as it was, and names the VM and the step.
 */
export type { Strategy } from "../vm/strategy.ts";
export { ORDERS, type Order } from "./start-gate.ts";

export interface RestoreOptions {
  dir: string;
  image: GuestImage;
  accel: Accel;
  log: Logger;
  strategy: Strategy;
  /** Default restore-line. */
  order?: Order;
  /** Hold frames for VMs not yet running (default: on for restore-line, off for the baselines). */
  hold?: boolean;
  /** Bring each guest's wall clock to the host's after start (default true). */
  syncClock?: boolean;
  /** hotrestore: W0 for every VM instead of the restore line's. */
  w0Pages?: number;
  /** hotrestore: kernel paging, the page server, or "auto" (the default: kernel where it can). */
  paging?: Paging | "auto";
  /** Write every frame each VM sends or receives during and after the restore to `<dir>/<vm>.pcap`. */
  captureDir?: string;
  /** performance.now() when the restore command arrived: every figure is relative to it. */
  commandAt: number;
  progress?: (note: { step: string; vm?: string; detail?: string }) => void;
}

export interface RestoreReport {
  snapshot: string;
  strategy: Strategy;
  order: Order;
  hold: boolean;
  /** Command → every VM running. */
  restoreLatencyMs: number;
  inflightFrames: number;
  backoff: BackoffReport;
  /** Retransmitted TCP segments seen at the switch during the restore. */
  retransmits: number;
  /** Frames dropped because their VM was not running yet (baselines only). */
  droppedFrames: number;
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
  /** Command → responsive (DESIGN.md §9); basis says which form. */
  ttrMs: number | null;
  ttrBasis: "workload" | "fault-stall" | "start" | null;
  /** The guest's wall clock lag found (and corrected) after start, ms; null when not synced. */
  clockLagMs: number | null;
  w0Pages: number;
} & Omit<VmRestoreFigures, "doneMs">;

export const LOAD_TIMEOUT_MS = 600_000;
export { DISK_FILE } from "./preflight.ts";
/** After every VM runs, flows get this long to show progress before their backoff is "stalled". */
export const BACKOFF_HORIZON_MS = 20_000;
/** The guests' wall clocks are set once every flow progressed, or this long after all run. */
export const CLOCK_SYNC_DELAY_MS = 500;

type Step = "PREPARE" | "START" | "RUNNING" | "DONE";

function stepError(vm: string, step: Step, error: unknown): HrError {
  const inner = messageOf(error);
  const message = inner.startsWith(`VM ${vm}`) ? `${inner} (step ${step})` : `VM ${vm}: ${step}: ${inner}`;
  const code = error instanceof HrError ? error.code : "RESTORE_FAILED";
  const hint = error instanceof HrError ? error.hint : undefined;
  return new HrError(code, message, {
    cause: error,
    hint: hint ?? "see the VM's qemu.log in the daemon's state",
  });
}

/** `inputs`: what `preflightRestore` returned for this snapshot (it is run here otherwise). */
export async function restoreCluster(
  snapshot: SnapshotReader,
  options: RestoreOptions,
  inputs?: RestoreInputs,
): Promise<{ cluster: Cluster; report: RestoreReport }> {
  const progress = options.progress ?? (() => undefined);
  const order = options.order ?? "restore-line";
  const hold = options.hold ?? order === "restore-line";
  const name = snapshot.manifest.name;
  const { spec, plan, traffic, inflight, sources } = inputs ?? (await preflightRestore(snapshot));
  const cluster = await Cluster.prepare(spec, {
    dir: options.dir,
    sourceDoc: snapshot.spec,
    image: options.image,
    accel: options.accel,
    log: options.log,
  });
  const since = (): number => Math.round((performance.now() - options.commandAt) * 10) / 10;
  const sw = cluster.switch;
  const tracker = new BackoffTracker(flowsActiveAtCut(traffic?.flows ?? []));
  const onTcp = (event: TcpEvent): void =>
    tracker.observe(
      event.observation.key,
      since(),
      event.observation.progress,
      event.observation.retransmission,
    );
  try {
    sw.flowTable.load(traffic?.flows ?? []);
    if (options.captureDir !== undefined) await sw.captureAll(options.captureDir);
    sw.on("tcp", onTcp);
    const sockets = new Map<string, string>();
    for (const vm of cluster.vms.values()) {
      sockets.set(
        vm.spec.name,
        await sw.addPort(vm.spec.name, { holdWhileDisconnected: hold, mac: vm.spec.mac }),
      );
      if (hold) sw.hold(vm.spec.name);
      else sw.block(vm.spec.name, true);
    }
    // Held: queued and delivered when the receiver starts. Not held: lost, as on a host bridge.
    for (const frame of inflight) sw.inject(frame.to, [frame.data]);

    const handles = new Map<string, VmRestoreHandle>();
    // The first VM whose load fails once it was ready ends the whole restore at once: no later
    // step (peers still preparing, announce, clock sync, the backoff horizon) may keep its QEMU
    // waiting for pages that will not come (the page server's stall bound is the bound).
    let failNow: (error: HrError) => void = () => undefined;
    const failed = new Promise<never>((_resolve, reject) => {
      failNow = reject;
    });
    failed.catch(() => undefined);
    const orFail = async <T>(work: Promise<T>): Promise<T> => {
      work.catch(() => undefined);
      return Promise.race([work, failed]);
    };
    const readyAt = new Map<string, number>();
    const startedAt = new Map<string, { ms: number; hostAt: number }>();
    const w0 = new Map<string, number>();
    const gate = new StartGate(order, [...cluster.vms.keys()], plan.graph);
    const announce: Promise<void>[] = [];
    const clocks = new Map<string, number | null>();

    const start = async (vm: Vm): Promise<void> => {
      const vmName = vm.spec.name;
      try {
        await vm.qmp.execute("cont");
      } catch (error) {
        throw stepError(vmName, "START", error);
      }
      const hostAt = performance.now();
      handles.get(vmName)?.started();
      vm.markRunning();
      if (hold) sw.release(vmName);
      else sw.block(vmName, false);
      const ms = since();
      startedAt.set(vmName, { ms, hostAt });
      tracker.started(vmName, ms);
      progress({ step: "started", vm: vmName, detail: `${ms} ms after the command` });
      announce.push(announceSelf(vm, options));
      await Promise.all(gate.started(vmName).map((next) => start(cluster.vm(next))));
    };

    const preparing = Promise.all(
      [...cluster.vms.values()].map(async (vm) => {
        const vmName = vm.spec.name;
        try {
          const source = sources.get(vmName);
          if (source === undefined) throw new HrError("RESTORE_FAILED", `VM ${vmName} was not checked`);
          let disk: string | undefined;
          if (snapshot.vmFileNames(vmName).includes(DISK_FILE)) {
            // checked by preflightRestore
            await mkdir(vm.dir, { recursive: true, mode: 0o700 });
            disk = join(vm.dir, "disk.qcow2");
            await overlayDisk(snapshot.vmFilePath(vmName, DISK_FILE), disk);
          }
          progress({ step: "load", vm: vmName });
          // Read when a snapshot asks, so it gets the working set as refined by then.
          vm.restoredWorkingSet = () => snapshot.workingSet(vmName);
          const w0Pages = options.w0Pages ?? plan.line.w0[vmName] ?? DEFAULT_W0_PAGES;
          w0.set(vmName, options.strategy === "hotrestore" ? w0Pages : 0);
          const handle = restoreVm(options.strategy, {
            vm,
            start: {
              accel: options.accel,
              image: options.image,
              netSocket: sockets.get(vmName) ?? "",
              hosts: cluster.hosts,
              disk,
            },
            snapshot,
            source,
            commandAt: options.commandAt,
            timeoutMs: LOAD_TIMEOUT_MS,
            w0Pages,
            ...(options.paging === undefined ? {} : { paging: options.paging }),
          });
          handles.set(vmName, handle);
          await handle.ready;
          handle.finished.catch((error: unknown) => failNow(stepError(vmName, "DONE", error)));
        } catch (error) {
          throw stepError(vmName, "PREPARE", error);
        }
        readyAt.set(vmName, since());
        const figures = handles.get(vmName)?.figures();
        progress({
          step: "ready",
          vm: vmName,
          detail: `${figures?.pagesBeforeStart ?? 0} pages in ${figures?.loadMs ?? 0} ms`,
        });
        await Promise.all(gate.ready(vmName).map((next) => start(cluster.vm(next))));
      }),
    );
    await orFail(preparing);
    if (startedAt.size !== cluster.vms.size) {
      const waiting = [...cluster.vms.keys()].filter((vm) => !startedAt.has(vm));
      throw new HrError("RESTORE_FAILED", `VMs ${waiting.join(", ")} were ready but never started`, {
        hint: "a bug in the start order; report it with the snapshot's graph (`snapshot graph`)",
      });
    }
    const restoreLatencyMs = Math.max(...[...startedAt.values()].map((s) => s.ms));
    progress({ step: "running", detail: `every VM running ${restoreLatencyMs} ms after the command` });
    await orFail(Promise.all(announce));
    // The wall clocks: an exec in every guest, which costs a freshly restored TCG guest tens of
    // ms of CPU, so it waits until the flows show progress (at most CLOCK_SYNC_DELAY_MS).
    if (options.syncClock !== false) {
      const syncBy = performance.now() + CLOCK_SYNC_DELAY_MS;
      while (!tracker.complete && performance.now() < syncBy) await orFail(sleep(5));
      await orFail(Promise.all([...cluster.vms.values()].map((vm) => syncClock(vm, options, clocks))));
    }

    // Lazy strategies go on loading in the background; each VM's failure names it.
    const finishing = Promise.all(
      [...handles].map(async ([vmName, handle]) => {
        try {
          await handle.finished;
        } catch (error) {
          throw stepError(vmName, "DONE", error);
        }
      }),
    );
    await orFail(finishing);
    const horizon = performance.now() + BACKOFF_HORIZON_MS;
    while (!tracker.complete && performance.now() < horizon) await orFail(sleep(20));
    const responsiveness = new Map(
      await Promise.all(
        spec.vms.map(async (vmSpec) => {
          const started = startedAt.get(vmSpec.name);
          const vm = cluster.vm(vmSpec.name);
          const result =
            started === undefined
              ? null
              : await tryMeasureResponsiveness(
                  vm,
                  vmSpec,
                  { hostAt: started.hostAt, startedMs: started.ms },
                  (m) => options.log.warn(m),
                );
          return [vmSpec.name, result] as const;
        }),
      ),
    );
    for (const [vmName, handle] of handles) {
      const refined = handle.refinedWorkingSet();
      if (refined !== undefined && refined.length > 0) await snapshot.replaceWorkingSet(vmName, refined);
    }
    const backoff = tracker.report();
    const report: RestoreReport = {
      snapshot: name,
      strategy: options.strategy,
      order,
      hold,
      restoreLatencyMs,
      inflightFrames: inflight.length,
      backoff,
      retransmits: tracker.retransmits,
      droppedFrames: sw.ports().reduce((sum, port) => sum + port.counters.dropsBlocked, 0),
      vms: spec.vms.map((vm): RestoreVmReport => {
        const handle = handles.get(vm.name);
        if (!handle) throw new HrError("RESTORE_FAILED", `VM ${vm.name} was never restored`);
        const { doneMs, ...figures } = handle.figures();
        const startedMs = startedAt.get(vm.name)?.ms ?? restoreLatencyMs;
        const workload = responsiveness.get(vm.name)?.ttrMs ?? null;
        const ttr: Pick<RestoreVmReport, "ttrMs" | "ttrBasis"> =
          workload !== null
            ? { ttrMs: workload, ttrBasis: "workload" }
            : figures.faultTtrMs !== null
              ? { ttrMs: figures.faultTtrMs, ttrBasis: "fault-stall" }
              : { ttrMs: Math.round(startedMs), ttrBasis: "start" };
        return {
          name: vm.name,
          restoreLatencyMs: startedMs,
          startedMs,
          readyMs: readyAt.get(vm.name) ?? 0,
          bytesLoaded: figures.bytesBeforeStart + figures.bytesAfterStart,
          backgroundDoneMs: doneMs,
          ...ttr,
          clockLagMs: clocks.get(vm.name) ?? null,
          w0Pages: w0.get(vm.name) ?? 0,
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
  } finally {
    sw.off("tcp", onTcp);
  }
}

/** RUNNING: the network relearns where the VM is. */
async function announceSelf(vm: Vm, options: RestoreOptions): Promise<void> {
  await vm.qmp
    .execute("announce-self", { initial: 50, max: 550, rounds: 3, step: 100 })
    .catch((error: unknown) => options.log.warn({ err: error, vm: vm.spec.name }, "announce-self failed"));
}

/** The guest's wall clock brought to the host's; the lag found is reported. */
async function syncClock(vm: Vm, options: RestoreOptions, clocks: Map<string, number | null>): Promise<void> {
  try {
    clocks.set(vm.spec.name, await syncGuestClock(vm));
  } catch (error) {
    options.log.warn({ err: error, vm: vm.spec.name }, "setting the guest's clock failed");
    clocks.set(vm.spec.name, null);
  }
}
