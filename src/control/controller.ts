import { fuseUnavailable, ourMounts, unmountFuse } from "../restore/vm/fuse/mount.ts";
import { warmFuseWorkers } from "../restore/vm/fuse/worker-pool.ts";
import { join } from "node:path";
import { Cluster, type ClusterStatus } from "../cluster/cluster.ts";
import { loadGuestImage } from "../image/image.ts";
import { validateSpec } from "../spec/validate.ts";
import { HrError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import { chooseAccel } from "../vm/accel.ts";
import { restoreCluster, type Order, type RestoreReport, type Strategy } from "../restore/cluster/restore.ts";
import { planFromSnapshot, type SnapshotPlan } from "../restore/cluster/plan.ts";
import { DEFAULT_W0_PAGES } from "../restore/vm/lazy.ts";
import { preflightRestore } from "../restore/cluster/preflight.ts";
import { snapshotCluster, type SnapshotReport } from "../snapshot/cut.ts";
import { checkSnapshotName, SnapshotStore, type SnapshotSummary } from "../snapshot/store/index.ts";
import { actionSchema, type Action, type Progress } from "./actions.ts";

export interface ControllerOptions {
  stateDir: string;
  /** Root of the snapshot store (default <state>/snapshots). */
  storeRoot?: string;
  cacheDir: string;
  guestDir: string;
  log: Logger;
}

export interface GraphEdge {
  from: string;
  to: string;
  bytes: number;
  frames?: number;
}

export type SnapshotInspection = SnapshotSummary & { graph: { edges: GraphEdge[] } };

export interface ExecReply {
  exitCode: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/**
 * Executes actions. Owns the (one) running cluster. Operations that change the cluster run one
 * at a time; a second one while the first runs is refused with CONTROLLER_BUSY.
 */
export class Controller {
  private cluster: Cluster | undefined;
  private busy: string | undefined;
  private readonly options: ControllerOptions;
  readonly store: SnapshotStore;

  constructor(options: ControllerOptions) {
    this.options = options;
    this.store = new SnapshotStore(options.storeRoot ?? join(options.stateDir, "snapshots"));
  }

  /**
   * What a daemon does once at start, in the background: unmount guest RAM file systems a
   * previous daemon left behind (it was killed: its QEMUs died with it). FUSE workers for
   * kernel paging are loaded by the first restore that asks for it, and kept (worker-pool.ts).
   */
  async prepare(): Promise<void> {
    for (const dir of await ourMounts(join(this.options.stateDir, "run"))) {
      const problem = await unmountFuse(dir);
      if (problem === undefined) this.options.log.warn({ dir }, "unmounted a stale guest RAM file system");
      else this.options.log.error({ dir, problem }, "cannot unmount a stale guest RAM file system");
    }
  }

  get hasCluster(): boolean {
    return this.cluster !== undefined || this.busy !== undefined;
  }

  async execute(raw: unknown, progress: (note: Progress) => void = () => undefined): Promise<unknown> {
    const parsed = actionSchema.safeParse(raw);
    if (!parsed.success) {
      throw new HrError(
        "ACTION_INVALID",
        `invalid request: ${parsed.error.issues.map((i) => i.message).join("; ")}`,
      );
    }
    const action: Action = parsed.data;
    switch (action.type) {
      case "ping":
        return { pong: true, pid: process.pid };
      case "up":
        return this.exclusive("up", () => this.up(action.spec, action.source, progress));
      case "status":
        return this.status(action.workloads);
      case "exec":
        return this.exec(action.vm, action.command, action.timeoutMs);
      case "down":
        return this.exclusive("down", () => this.down());
      case "capture":
        return this.capture(action.vm, action.file, action.seconds);
      case "snapshot":
        return this.exclusive("snapshot", () => this.snapshot(action.name, progress));
      case "snapshots":
        return this.store.list();
      case "snapshot-inspect":
        return this.inspect(action.name);
      case "snapshot-verify":
        return this.store.verify(action.name);
      case "snapshot-graph":
        return this.graph(action.name);
      case "snapshot-rm":
        return this.exclusive("snapshot rm", async () => {
          await this.store.remove(action.name);
          return { removed: action.name };
        });
      case "restore":
        return this.exclusive("restore", () => this.restore(action, progress));
    }
  }

  /** Stops everything (daemon shutdown). */
  async shutdown(): Promise<void> {
    const cluster = this.cluster;
    this.cluster = undefined;
    if (cluster) await cluster.down();
  }

  private async exclusive<T>(name: string, work: () => Promise<T>): Promise<T> {
    if (this.busy !== undefined) {
      throw new HrError("CONTROLLER_BUSY", `cannot ${name}: '${this.busy}' is still running`, {
        hint: "wait for it to finish and try again",
      });
    }
    this.busy = name;
    try {
      return await work();
    } finally {
      this.busy = undefined;
    }
  }

  private requireCluster(): Cluster {
    if (!this.cluster) {
      throw new HrError("NO_CLUSTER", "no cluster is running", {
        hint: "start one with: hotrestore up <spec.json>",
      });
    }
    return this.cluster;
  }

  private async up(doc: unknown, source: string, progress: (note: Progress) => void): Promise<ClusterStatus> {
    if (this.cluster) {
      throw new HrError("CLUSTER_EXISTS", `cluster '${this.cluster.spec.name}' is already running`, {
        hint: "stop it first with: hotrestore down",
      });
    }
    const spec = validateSpec(doc, source);
    // hotrestore restores on kernel paging by default: its FUSE workers (0.35 s of CPU each) load
    // while the guests boot, not during the first restore (the demo's first kernel-paged restore
    // of 3 VMs took 2.5 s instead of ~0.9 s while they loaded).
    if ((await fuseUnavailable()) === undefined) warmFuseWorkers(spec.vms.length);
    const image = await loadGuestImage(this.options.guestDir);
    progress({ step: "accel", detail: "choosing the accelerator (probed once, then cached)" });
    const accel = await chooseAccel(image, this.options.cacheDir);
    this.options.log.info({ accel }, "accelerator");
    progress({ step: "accel", detail: `${accel.accel}: ${accel.reason}` });
    this.cluster = await Cluster.up(spec, {
      dir: join(this.options.stateDir, "run", spec.name),
      sourceDoc: doc,
      image,
      accel: accel.accel,
      log: this.options.log,
      onProgress: progress,
    });
    return this.cluster.status();
  }

  private async status(workloads: boolean): Promise<ClusterStatus> {
    return this.requireCluster().status({ workloads });
  }

  private async exec(vm: string, command: string, timeoutMs: number | undefined): Promise<ExecReply> {
    const result = await this.requireCluster().exec(vm, command, timeoutMs);
    return {
      exitCode: result.exitCode,
      stdout: result.stdout.toString("base64"),
      stderr: result.stderr.toString("base64"),
      timedOut: result.timedOut,
    };
  }

  /** Writes every frame seen on a VM's switch port, both ways, to a pcap file for a while. */
  private async capture(
    vm: string,
    file: string,
    seconds: number,
  ): Promise<{ file: string; frames: number }> {
    const cluster = this.requireCluster();
    cluster.vm(vm);
    const before = cluster.switch.port(vm).counters;
    const seen = before.rxFrames + before.txFrames;
    await cluster.switch.startCapture(vm, file);
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    await cluster.switch.stopCapture(vm);
    const after = cluster.switch.port(vm).counters;
    return { file, frames: after.rxFrames + after.txFrames - seen };
  }

  private async snapshot(
    name: string | undefined,
    progress: (note: Progress) => void,
  ): Promise<SnapshotReport> {
    if (name !== undefined) checkSnapshotName(name); // a bad name is refused before anything else
    const cluster = this.requireCluster();
    await this.store.cleanupStale();
    return snapshotCluster(
      cluster,
      this.store,
      name ?? (await this.defaultName()),
      this.options.log,
      progress,
    );
  }

  /** The store's summary plus the traffic graph saved at the cut. */
  private async inspect(name: string): Promise<SnapshotInspection> {
    const snapshot = await this.store.open(name);
    try {
      const summary = await snapshot.summary();
      const traffic = (await snapshot.traffic()) as { graph?: { edges?: GraphEdge[] } } | null;
      return { ...summary, graph: { edges: traffic?.graph?.edges ?? [] } };
    } finally {
      await snapshot.close();
    }
  }

  private async graph(name: string): Promise<SnapshotPlan> {
    const snapshot = await this.store.open(name);
    try {
      // The plan a restore makes (same W0 floor), so `snapshot graph` shows what restore does.
      return await planFromSnapshot(snapshot, { minW0Pages: DEFAULT_W0_PAGES });
    } finally {
      await snapshot.close();
    }
  }

  private async defaultName(): Promise<string> {
    const stamp = new Date().toISOString().replace(/[-:]/g, "").replace("T", "-").slice(0, 15);
    const taken = new Set(
      (await this.store.list()).map((entry) => (entry.status === "ok" ? entry.summary.name : entry.name)),
    );
    let name = `snap-${stamp}`;
    for (let n = 2; taken.has(name); n += 1) name = `snap-${stamp}-${n}`;
    return name;
  }

  private async restore(
    action: {
      name: string;
      strategy: Strategy;
      order: Order;
      hold?: boolean | undefined;
      capture?: string | undefined;
      w0?: number | undefined;
      paging?: "auto" | "kernel" | "page-server" | undefined;
    },
    progress: (note: Progress) => void,
  ): Promise<RestoreReport> {
    const commandAt = performance.now();
    const name = action.name;
    const snapshot = await this.store.open(name);
    try {
      // Every check that needs no QEMU, before the running cluster is stopped: a damaged
      // snapshot is refused and leaves what runs alone.
      const inputs = await preflightRestore(snapshot);
      if (
        action.strategy === "hotrestore" &&
        (action.paging ?? "auto") !== "page-server" &&
        (await fuseUnavailable()) === undefined
      ) {
        warmFuseWorkers(inputs.spec.vms.length);
      }
      const image = await loadGuestImage(this.options.guestDir);
      const accel = await chooseAccel(image, this.options.cacheDir);
      if (this.cluster) {
        progress({ step: "stop", detail: `stopping the running cluster ${this.cluster.spec.name}` });
        const old = this.cluster;
        this.cluster = undefined;
        await old.down();
      }
      const { cluster, report } = await restoreCluster(
        snapshot,
        {
          // the validated spec's name: [a-z][a-z0-9-]{0,30}, never a path of its own
          dir: join(this.options.stateDir, "run", inputs.spec.name),
          image,
          accel: accel.accel,
          log: this.options.log,
          strategy: action.strategy,
          order: action.order,
          hold: action.hold,
          captureDir: action.capture,
          w0Pages: action.w0,
          ...(action.paging === undefined ? {} : { paging: action.paging }),
          commandAt,
          progress,
        },
        inputs,
      );
      this.cluster = cluster;
      return report;
    } finally {
      await snapshot.close();
    }
  }

  private async down(): Promise<{ stopped: string | undefined }> {
    const cluster = this.cluster;
    this.cluster = undefined;
    if (cluster) await cluster.down();
    return { stopped: cluster?.spec.name };
  }
}
