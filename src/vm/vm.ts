import { existsSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import type { GuestImage } from "../image/image.ts";
import type { WorkingSetEntry } from "../snapshot/store/index.ts";
import { QmpClient } from "../qmp/client.ts";
import type { VmSpec } from "../spec/schema.ts";
import { HrError, messageOf } from "../util/errors.ts";
import { noThpShim } from "../util/paths.ts";
import { AgentClient, type ExecResult } from "./agent-client.ts";
import { QEMU } from "./accel.ts";
import { qemuArgv, type Accel } from "./argv.ts";
import { spawnGuarded, type GuardedProcess } from "./process.ts";

/**
 * One running VM: its QEMU process, its QMP connection and its in-guest agent.
 * State files live in `dir` (sockets, console log, QEMU's own log).
 */
/** Our own view before QEMU answers: "starting", "booting", "running", "stopped", "failed". */
export type VmState = string;

export interface VmStartOptions {
  accel: Accel;
  image: GuestImage;
  /** The switch socket for the NIC. */
  netSocket: string;
  /** `name:ip,...` of every VM of the cluster, for the guest's /etc/hosts. */
  hosts: string;
  disk: string | undefined;
  /** Start paused, waiting for an incoming migration stream (`migrate-incoming`): a restore. */
  incoming?: boolean;
  /** The `-object` arguments of guest RAM (block ram0); default anonymous memory (argv.ts). */
  ramBackend?: readonly string[];
  /**
   * No transparent huge pages for this QEMU (a post-copy destination). QEMU madvises guest RAM
   * for THP, and post-copy turns THP off only after the precopy phase: until then every page
   * the page server sends before start into a new 2 MiB region makes the kernel compact and
   * zero a huge page (measured: W0 of 4096 scattered pages loaded in 2.2 s with THP, 1.2 s without).
   */
  noTransparentHugepages?: boolean;
  /**
   * QEMU's MADV_HUGEPAGE on guest RAM becomes a no-op (native/qemu-no-thp.c, LD_PRELOADed): on
   * file-backed RAM it makes every page-cache miss read the 2 MiB around the page (kernel paging).
   */
  noHugepageAdvice?: boolean;
  extraArgs?: readonly string[];
}

export const QMP_CONNECT_TIMEOUT_MS = 15_000;

export class Vm {
  readonly #cleanups: Promise<void>[] = [];
  #fileBackedRam = false;
  readonly spec: VmSpec;
  readonly dir: string;
  private readonly log: Logger;
  private proc: GuardedProcess | undefined;
  private qmpClient: QmpClient | undefined;
  private agentClient: AgentClient | undefined;
  private stopping = false;
  state: VmState = "starting";
  /** The block node on top of the disk chain (changes with every external disk snapshot). */
  diskNode = "disk0";
  /** The file of that node. */
  diskFile: string | undefined;

  constructor(spec: VmSpec, dir: string, log: Logger) {
    this.spec = spec;
    this.dir = dir;
    this.log = log.child({ vm: spec.name });
  }

  /**
   * The working set of the snapshot this VM was restored from (set by the restore). A snapshot
   * that has to stop and copy the VM (fileBackedRam) sees no writes after the cut: it keeps this.
   */
  restoredWorkingSet: (() => Promise<readonly WorkingSetEntry[]>) | undefined;

  /**
   * Guest RAM maps a file (a restore by `mmap` or on kernel paging), not anonymous memory: QEMU's
   * background-snapshot (uffd write-protect) cannot track it, so a snapshot stops and copies it.
   */
  get fileBackedRam(): boolean {
    return this.#fileBackedRam;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  get consoleLog(): string {
    return join(this.dir, "console.log");
  }

  get qmp(): QmpClient {
    if (!this.qmpClient) throw new HrError("VM_NOT_RUNNING", `VM ${this.spec.name} has no QMP connection`);
    return this.qmpClient;
  }

  get agent(): AgentClient {
    if (!this.agentClient)
      throw new HrError("VM_NOT_RUNNING", `VM ${this.spec.name} has no agent connection`);
    return this.agentClient;
  }

  /** Spawns QEMU and connects QMP and the agent socket (the guest is still booting afterwards). */
  async start(options: VmStartOptions): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    this.#fileBackedRam = options.ramBackend !== undefined;
    const qmpSocket = join(this.dir, "qmp.sock");
    const agentSocket = join(this.dir, "agent.sock");
    await Promise.all([rm(qmpSocket, { force: true }), rm(agentSocket, { force: true })]);
    const argv = qemuArgv(
      {
        name: this.spec.name,
        memoryMiB: this.spec.memoryMiB,
        vcpus: this.spec.vcpus,
        accel: options.accel,
        mac: this.spec.mac,
        guestParams: {
          "hr.name": this.spec.name,
          "hr.ip": `${this.spec.ip}/24`,
          "hr.hosts": options.hosts,
          ...(options.disk ? { "hr.disk": "1" } : {}),
        },
        ...(options.ramBackend === undefined ? {} : { ramBackend: options.ramBackend }),
        extra: [...(options.incoming ? ["-S", "-incoming", "defer"] : []), ...(options.extraArgs ?? [])],
      },
      {
        kernel: options.image.kernel,
        initrd: options.image.initrd,
        qmpSocket,
        agentSocket,
        consoleLog: this.consoleLog,
        netSocket: options.netSocket,
        disk: options.disk,
      },
    );
    this.log.info({ argv }, "starting QEMU");
    this.diskFile = options.disk;
    this.diskNode = "disk0";
    const preload = options.noHugepageAdvice === true ? noThpShim() : undefined;
    if (preload !== undefined && !existsSync(preload)) {
      throw new HrError("SETUP_INCOMPLETE", `VM ${this.spec.name}: ${preload} is missing`, {
        hint: "run `npm run setup` (it builds native/qemu-no-thp.c with gcc)",
      });
    }
    const proc = spawnGuarded(QEMU, argv, join(this.dir, "qemu.log"), {
      noTransparentHugepages: options.noTransparentHugepages === true,
      ...(preload === undefined ? {} : { preload }),
    });
    this.proc = proc;
    this.state = "booting";
    proc.exited
      .then((status) => {
        if (!this.stopping) {
          this.state = "failed";
          this.log.error({ status }, "QEMU exited unexpectedly");
        }
      })
      .catch(() => undefined);
    try {
      this.qmpClient = await this.raceExit(
        QmpClient.connect(qmpSocket, { timeoutMs: QMP_CONNECT_TIMEOUT_MS }),
      );
      this.agentClient = await this.raceExit(AgentClient.connect(agentSocket, { timeoutMs: 5_000 }));
    } catch (error) {
      throw await this.failure("start", error);
    }
  }

  /** Settles when this VM's QEMU has exited (at once if none was started). Never rejects. */
  private exited(): Promise<void> {
    return this.proc ? this.proc.exited.then(() => undefined) : Promise.resolve();
  }

  /**
   * Runs `cleanup` once this VM's QEMU has exited (e.g. unmount what it mapped); `stop()` returns
   * only after it, so whoever stops a VM can reuse its directory. A failing cleanup is logged.
   */
  afterExit(cleanup: () => Promise<void>): void {
    this.#cleanups.push(
      this.exited()
        .then(cleanup)
        .catch((error: unknown) => this.log.warn({ err: error }, "cleanup after QEMU's exit failed")),
    );
  }

  /** Marks a VM started paused (a restore) as running once `cont` succeeded. */
  markRunning(): void {
    this.state = "running";
  }

  /** Waits until the in-guest agent answers (the guest has booted and its network is up). */
  async waitReady(timeoutMs: number): Promise<void> {
    try {
      await this.raceExit(this.agent.waitReady(timeoutMs));
      this.state = "running";
    } catch (error) {
      throw await this.failure("boot", error);
    }
  }

  async exec(command: string, timeoutMs = 60_000): Promise<ExecResult> {
    return this.agent.exec(command, { timeoutMs });
  }

  async queryStatus(): Promise<string> {
    if (!this.proc?.isRunning()) return this.state === "failed" ? "failed" : "stopped";
    const reply = await this.qmp.execute("query-status", undefined, { timeoutMs: 2_000 });
    return reply.status;
  }

  /** Stops QEMU: `quit` over QMP, then SIGKILL by PID if it lingers. Never throws. */
  async stop(): Promise<void> {
    this.stopping = true;
    const proc = this.proc;
    await this.agentClient?.close().catch(() => undefined);
    if (proc?.isRunning() && this.qmpClient) {
      await this.qmpClient.execute("quit", undefined, { timeoutMs: 1_000 }).catch(() => undefined);
    }
    this.qmpClient?.close();
    if (proc) await proc.stop(2_000);
    await Promise.all(this.#cleanups);
    this.state = "stopped";
  }

  /** Resolves with `work`, or rejects as soon as QEMU exits. */
  private async raceExit<T>(work: Promise<T>): Promise<T> {
    const proc = this.proc;
    if (!proc) return work;
    return Promise.race([
      work,
      proc.exited.then((status) => {
        throw new HrError(
          "VM_EXITED",
          `QEMU exited (code ${String(status.code)}, signal ${String(status.signal)})`,
        );
      }),
    ]);
  }

  private async failure(step: string, error: unknown): Promise<HrError> {
    const tail = this.proc ? await this.proc.logTail(5) : "";
    const detail = tail.trim() === "" ? "" : `\nQEMU said:\n${tail}`;
    return new HrError(
      "VM_START_FAILED",
      `VM ${this.spec.name}: ${step} failed: ${messageOf(error)}${detail}`,
      {
        cause: error,
        hint: `see ${this.consoleLog} and ${join(this.dir, "qemu.log")}`,
      },
    );
  }
}
