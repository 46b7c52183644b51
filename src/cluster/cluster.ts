import { execFile } from "node:child_process";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Logger } from "pino";
import type { GuestImage } from "../image/image.ts";
import { VirtualSwitch } from "../net/switch.ts";
import type { ClusterSpec } from "../spec/schema.ts";
import { HrError, messageOf } from "../util/errors.ts";
import type { ExecResult } from "../vm/agent-client.ts";
import type { Accel } from "../vm/argv.ts";
import { Vm } from "../vm/vm.ts";
import { parseStats, READ_STATS_COMMAND, workloadLaunches } from "./workloads.ts";

const execFileAsync = promisify(execFile);

/** How long a VM may take from spawn to its agent answering (TCG boots take ~9 s, more when several share 2 cores). */
export const BOOT_TIMEOUT_MS = 240_000;

export interface ClusterStatus {
  cluster: string;
  accel: Accel;
  vms: {
    name: string;
    state: string;
    ip: string;
    mac: string;
    memoryMiB: number;
    vcpus: number;
    pid: number | undefined;
    workloads?: Record<string, unknown>;
  }[];
  traffic: { from: string; to: string; frames: number; bytes: number }[];
  flows: unknown[];
}

export type ProgressFn = (event: { step: string; vm?: string; detail?: string }) => void;

export interface ClusterOptions {
  dir: string;
  /** The spec document as the user wrote it (saved with snapshots, validated again on restore). */
  sourceDoc: unknown;
  image: GuestImage;
  accel: Accel;
  log: Logger;
  onProgress?: ProgressFn;
}

/** A running cluster: the switch and one QEMU per VM, booted from a validated spec. */
export class Cluster {
  readonly spec: ClusterSpec;
  readonly accel: Accel;
  readonly switch: VirtualSwitch;
  readonly vms: Map<string, Vm>;
  private readonly dir: string;
  private readonly log: Logger;
  private readonly options: ClusterOptions;

  private constructor(spec: ClusterSpec, options: ClusterOptions, sw: VirtualSwitch) {
    this.spec = spec;
    this.accel = options.accel;
    this.dir = options.dir;
    this.log = options.log;
    this.options = options;
    this.switch = sw;
    this.vms = new Map(
      spec.vms.map((vm) => [vm.name, new Vm(vm, join(options.dir, "vms", vm.name), options.log)]),
    );
  }

  /** Prepares an empty runtime (directory, switch, VM objects) without starting any QEMU. */
  static async prepare(spec: ClusterSpec, options: ClusterOptions): Promise<Cluster> {
    await rm(options.dir, { recursive: true, force: true });
    await mkdir(join(options.dir, "switch"), { recursive: true, mode: 0o700 });
    const sw = new VirtualSwitch({ dir: join(options.dir, "switch") });
    return new Cluster(spec, options, sw);
  }

  /** Boots every VM in parallel and starts the workloads. On any failure stops everything it started. */
  static async up(spec: ClusterSpec, options: ClusterOptions): Promise<Cluster> {
    const cluster = await Cluster.prepare(spec, options);
    try {
      await cluster.boot(options.onProgress ?? (() => undefined));
      return cluster;
    } catch (error) {
      options.log.error({ err: error }, "cluster up failed, stopping everything");
      await cluster.down();
      throw error;
    }
  }

  /** `name:ip,...` of every VM, for the guests' /etc/hosts. */
  get hosts(): string {
    return this.spec.vms.map((vm) => `${vm.name}:${vm.ip}`).join(",");
  }

  get image(): GuestImage {
    return this.options.image;
  }

  get sourceDoc(): unknown {
    return this.options.sourceDoc;
  }

  get runDir(): string {
    return this.dir;
  }

  private async boot(progress: ProgressFn): Promise<void> {
    await Promise.all(
      [...this.vms.values()].map(async (vm) => {
        const netSocket = await this.switch.addPort(vm.spec.name, { mac: vm.spec.mac });
        const disk = vm.spec.diskMiB === undefined ? undefined : await createDisk(vm.dir, vm.spec.diskMiB);
        progress({ step: "boot", vm: vm.spec.name });
        await vm.start({ accel: this.accel, image: this.options.image, netSocket, hosts: this.hosts, disk });
        await vm.waitReady(BOOT_TIMEOUT_MS);
        progress({ step: "ready", vm: vm.spec.name });
      }),
    );
    await this.startWorkloads();
  }

  vm(name: string): Vm {
    const vm = this.vms.get(name);
    if (!vm) {
      throw new HrError("VM_UNKNOWN", `no VM named '${name}' in cluster ${this.spec.name}`, {
        hint: `VMs: ${[...this.vms.keys()].join(", ")}`,
      });
    }
    return vm;
  }

  async exec(name: string, command: string, timeoutMs?: number): Promise<ExecResult> {
    return this.vm(name).exec(command, timeoutMs);
  }

  async status(options: { workloads?: boolean } = {}): Promise<ClusterStatus> {
    const vms = await Promise.all(
      [...this.vms.values()].map(async (vm) => {
        const state = await vm.queryStatus().catch((error: unknown) => `unknown (${messageOf(error)})`);
        let workloads: Record<string, unknown> | undefined;
        if (options.workloads && state === "running") {
          const result = await vm.exec(READ_STATS_COMMAND, 5_000).catch(() => undefined);
          workloads = result ? parseStats(result.stdout.toString("utf8")) : undefined;
        }
        return {
          name: vm.spec.name,
          state,
          ip: vm.spec.ip,
          mac: vm.spec.mac,
          memoryMiB: vm.spec.memoryMiB,
          vcpus: vm.spec.vcpus,
          pid: vm.pid,
          ...(workloads ? { workloads } : {}),
        };
      }),
    );
    return {
      cluster: this.spec.name,
      accel: this.accel,
      vms,
      traffic: this.switch.traffic().filter((pair) => pair.to !== "*"),
      flows: this.switch.flows(),
    };
  }

  /** Stops every VM (by PID if QMP does not answer) and the switch. Never throws. */
  async down(): Promise<void> {
    await Promise.all([...this.vms.values()].map((vm) => vm.stop()));
    await this.switch.close().catch((error: unknown) => this.log.warn({ err: error }, "switch close"));
  }

  private async startWorkloads(): Promise<void> {
    for (const launch of workloadLaunches(this.spec.vms)) {
      const vm = this.vm(launch.vm);
      try {
        await vm.agent.spawn(launch.command);
      } catch (error) {
        throw new HrError(
          "WORKLOAD_START_FAILED",
          `VM ${launch.vm}: cannot start workload ${launch.id}: ${messageOf(error)}`,
          {
            cause: error,
          },
        );
      }
    }
  }
}

async function createDisk(dir: string, sizeMiB: number): Promise<string> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, "disk.qcow2");
  try {
    await execFileAsync("qemu-img", ["create", "-q", "-f", "qcow2", path, `${sizeMiB}M`]);
  } catch (error) {
    throw new HrError("DISK_CREATE_FAILED", `cannot create disk ${path}: ${messageOf(error)}`, {
      cause: error,
      hint: "is qemu-utils installed? run: npm run setup",
    });
  }
  return path;
}
