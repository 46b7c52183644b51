import { rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { HrError } from "../../util/errors.ts";
import { badInput, writeError } from "./errors.ts";
import { fsyncDir, sha256Hex, writeDurable } from "./fs-io.ts";
import { encodeInflight, type InflightFrame } from "./inflight-file.ts";
import { checkVmName, INFLIGHT_FILE, MANIFEST_FILE, resolveInside, TRAFFIC_FILE } from "./layout.ts";
import {
  encodeManifest,
  FORMAT_VERSION,
  type JsonValue,
  type ManifestBody,
  type ManifestFile,
} from "./manifest.ts";
import { MemoryImageWriter, type BlockSpec } from "./memory-writer.ts";
import { summarize, type SnapshotSummary } from "./summary.ts";
import { VmSnapshotWriter } from "./vm-writer.ts";

/**
 * A snapshot being written into `<root>/.tmp-<name>-...` (created by `SnapshotStore.begin`).
 * States: open → (commit) → committed | (abort, or any write error) → aborted. Only `commit()`
 * makes it visible, by renaming the directory once everything in it is durable (layout.ts has
 * the protocol). On any I/O error (ENOSPC → SNAPSHOT_DISK_FULL) the temporary directory is
 * removed before the error reaches the caller; misuse (SNAPSHOT_BAD_INPUT) leaves it open.
 */

export interface PauseFigures {
  /** The cluster's pause (switch hold → every VM running again), ms. */
  clusterMs: number | null;
  /** Each VM's own pause, ms. */
  vms?: Record<string, number>;
}

const jsonSchema = z.json();

const MAX_JSON_DEPTH = 64;

function depthAtMost(value: unknown, limit: number): boolean {
  if (value === null || typeof value !== "object") return true;
  if (limit === 0) return false;
  return Object.values(value).every((item) => depthAtMost(item, limit - 1));
}

function checkJson(what: string, value: unknown): JsonValue {
  if (!depthAtMost(value, MAX_JSON_DEPTH)) {
    throw badInput(`${what} is nested deeper than ${MAX_JSON_DEPTH} levels`);
  }
  const parsed = jsonSchema.safeParse(value);
  if (!parsed.success) throw badInput(`${what} is not plain JSON (finite numbers, strings, arrays, objects)`);
  return parsed.data;
}

function checkMillis(what: string, value: number | null): number | null {
  if (value !== null && !(Number.isFinite(value) && value >= 0 && value <= 1e12)) {
    throw badInput(`${what} must be a non-negative number of milliseconds`);
  }
  return value;
}

export class SnapshotBuilder {
  readonly name: string;
  readonly root: string;
  readonly tempDir: string;
  readonly #onSettled: () => void;
  readonly #stagingPages: number | undefined;
  readonly #vms = new Map<string, VmSnapshotWriter>();
  /** VM names taken, including those whose writer is still being created. */
  readonly #vmNames = new Set<string>();
  #state: "open" | "committing" | "committed" | "aborted" = "open";
  #spec: JsonValue = null;
  #traffic: JsonValue | undefined;
  #inflight: InflightFrame[] = [];
  #pause: PauseFigures = { clusterMs: null };

  /** Use `SnapshotStore.begin()`; `onSettled` runs once the snapshot is committed or aborted. */
  constructor(root: string, name: string, tempDir: string, onSettled: () => void, stagingPages?: number) {
    this.root = root;
    this.name = name;
    this.tempDir = tempDir;
    this.#onSettled = onSettled;
    this.#stagingPages = stagingPages;
  }

  #checkOpen(): void {
    if (this.#state !== "open") {
      throw new HrError("SNAPSHOT_CLOSED", `snapshot ${this.name} is already ${this.#state}`);
    }
  }

  /** Aborts on I/O errors, then rethrows; the snapshot is gone when the caller sees the error. */
  readonly #fail = async (error: unknown): Promise<never> => {
    if (!(error instanceof HrError) || !["SNAPSHOT_BAD_INPUT", "SNAPSHOT_CLOSED"].includes(error.code)) {
      await this.abort();
    }
    throw error;
  };

  /** Adds a VM with its RAM blocks (QEMU order) and opaque machine info; returns its writer. */
  async vm(name: string, blocks: readonly BlockSpec[], machine: unknown = null): Promise<VmSnapshotWriter> {
    this.#checkOpen();
    checkVmName(name);
    if (this.#vmNames.has(name)) throw badInput(`VM ${name} is already part of snapshot ${this.name}`);
    if (blocks.length > 1024) throw badInput(`VM ${name}: too many RAM blocks`);
    const info = checkJson(`VM ${name}: machine info`, machine);
    this.#vmNames.add(name);
    const memory = await MemoryImageWriter.create(
      this.tempDir,
      this.name,
      name,
      blocks,
      this.#stagingPages,
    ).catch((error: unknown) => {
      this.#vmNames.delete(name);
      return this.#fail(error);
    });
    const writer = new VmSnapshotWriter(name, this.tempDir, this.name, memory, blocks, info, {
      onError: this.#fail,
      checkOpen: () => {
        if (this.#state === "committed" || this.#state === "aborted") this.#checkOpen();
      },
    });
    this.#vms.set(name, writer);
    return writer;
  }

  /**
   * Adds a file made by another tool to VM `vm` (added with `vm()` before), e.g. its disk image
   * at the cut: `produce` writes it at the path it is given (`vms/<vm>/files/<name>`).
   */
  async addVmFile(vm: string, name: string, produce: (destination: string) => Promise<void>): Promise<void> {
    this.#checkOpen();
    const writer = this.#vms.get(vm);
    if (writer === undefined) throw badInput(`snapshot ${this.name} has no VM ${vm}; add it with vm() first`);
    await writer.addFile(name, produce);
  }

  /** The cluster spec (opaque JSON, stored in the manifest). */
  setSpec(spec: unknown): void {
    this.#checkOpen();
    this.#spec = checkJson("the cluster spec", spec);
  }

  /** The switch's traffic log and graph (opaque JSON, `traffic.json`). */
  setTraffic(traffic: unknown): void {
    this.#checkOpen();
    this.#traffic = checkJson("the traffic log", traffic);
  }

  /** Frames held by the switch at the cut, in re-injection order. */
  setInflight(frames: readonly InflightFrame[]): void {
    this.#checkOpen();
    encodeInflight(frames); // validates now, so misuse is reported at the call that caused it
    this.#inflight = frames.map((frame) => ({ ...frame, data: Buffer.from(frame.data) }));
  }

  setPause(pause: PauseFigures): void {
    this.#checkOpen();
    checkMillis("the cluster pause", pause.clusterMs);
    for (const [vm, ms] of Object.entries(pause.vms ?? {})) checkMillis(`VM ${vm}'s pause`, ms);
    this.#pause = { clusterMs: pause.clusterMs, vms: { ...pause.vms } };
  }

  /** Makes the snapshot durable and visible under its name; returns its summary. */
  async commit(): Promise<SnapshotSummary> {
    this.#checkOpen();
    if (this.#vms.size === 0) throw badInput(`snapshot ${this.name} has no VM`);
    for (const vm of this.#vms.values()) {
      if (!vm.hasDeviceState()) {
        throw new HrError("SNAPSHOT_INCOMPLETE", `snapshot ${this.name}: VM ${vm.name} has no device state`);
      }
    }
    for (const frame of this.#inflight) {
      if (!this.#vms.has(frame.to)) {
        throw badInput(`an in-flight frame is addressed to unknown VM ${frame.to}`);
      }
    }
    this.#state = "committing";
    try {
      const body = await this.#writeAll();
      await writeDurable(
        join(this.tempDir, MANIFEST_FILE),
        `${this.name}/${MANIFEST_FILE}`,
        encodeManifest(body),
      );
      await fsyncDir(this.tempDir);
      await this.#publish();
      this.#state = "committed";
      this.#onSettled();
      return await summarize(join(this.root, this.name), { ...body, checksum: "" });
    } catch (error) {
      if (this.#state !== "committed") await this.abort();
      throw error;
    }
  }

  async #writeAll(): Promise<ManifestBody> {
    const files: ManifestFile[] = [];
    const vms = [];
    for (const writer of this.#vms.values()) {
      const { vm, files: vmFiles } = await writer.finish(this.#pause.vms?.[writer.name] ?? null);
      vms.push(vm);
      files.push(...vmFiles);
    }
    const put = async (path: string, bytes: Buffer): Promise<void> => {
      await writeDurable(resolveInside(this.tempDir, path), `${this.name}/${path}`, bytes);
      files.push({ path, size: bytes.length, sha256: sha256Hex(bytes), scope: "file" });
    };
    await put(INFLIGHT_FILE, encodeInflight(this.#inflight));
    if (this.#traffic !== undefined) await put(TRAFFIC_FILE, Buffer.from(JSON.stringify(this.#traffic)));
    for (const vm of vms) {
      await fsyncDir(resolveInside(this.tempDir, `vms/${vm.name}/ram`));
      await fsyncDir(resolveInside(this.tempDir, `vms/${vm.name}`));
    }
    await fsyncDir(join(this.tempDir, "vms"));
    return {
      formatVersion: FORMAT_VERSION,
      name: this.name,
      createdAt: new Date().toISOString(),
      pauseMs: this.#pause.clusterMs,
      spec: this.#spec,
      traffic: this.#traffic === undefined ? null : TRAFFIC_FILE,
      inflight: { file: INFLIGHT_FILE, frames: this.#inflight.length },
      vms,
      files,
    };
  }

  async #publish(): Promise<void> {
    const target = join(this.root, this.name);
    try {
      await rename(this.tempDir, target);
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      if (code === "ENOTEMPTY" || code === "EEXIST") {
        throw new HrError("SNAPSHOT_EXISTS", `a snapshot named ${this.name} was committed meanwhile`, {
          hint: "choose another name, or remove the existing snapshot first",
        });
      }
      throw writeError(target, error);
    }
    await fsyncDir(this.root).catch(() => undefined);
  }

  /** Drops the snapshot: closes its files and removes the temporary directory. Idempotent. */
  async abort(): Promise<void> {
    if (this.#state === "committed" || this.#state === "aborted") return;
    this.#state = "aborted";
    await Promise.all([...this.#vms.values()].map((vm) => vm.close().catch(() => undefined)));
    await rm(this.tempDir, { recursive: true, force: true });
    this.#onSettled();
  }
}
