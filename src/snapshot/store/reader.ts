import { lstat, rm } from "node:fs/promises";
import { join } from "node:path";
import { corrupt, badInput, readError } from "./errors.ts";
import { fsyncDir, readLimited, replaceAtomically, sha256Hex, sha256OfFile, writeDurable } from "./fs-io.ts";
import { decodeInflight, type InflightFrame } from "./inflight-file.ts";
import { MANIFEST_FILE, resolveInside, workingSetFile } from "./layout.ts";
import {
  decodeManifest,
  encodeManifest,
  MAX_MANIFEST_BYTES,
  type JsonValue,
  type Manifest,
  type ManifestFile,
  type ManifestVm,
} from "./manifest.ts";
import { VmMemoryReader } from "./memory-reader.ts";
import { summarize, type SnapshotSummary } from "./summary.ts";
import {
  checkWorkingSet,
  decodeWorkingSetFile,
  encodeWorkingSet,
  entriesFromSlots,
  slotsFromEntries,
  WORKING_SET_COPY_PAGES,
  type WorkingSetEntry,
} from "./working-set-file.ts";

/** A working set and the contents of its first `copies.length / 4096` pages (working-set-file.ts). */
export interface WorkingSetWithCopies {
  entries: WorkingSetEntry[];
  /** Checked with the file (its sha256 in the manifest). */
  copies: Buffer;
}

/**
 * A committed snapshot, open for reading. `open` checks the manifest (checksum, version,
 * schema, consistency) and that every listed file exists as a regular file of the listed size.
 * Every later read checks what it hands out: small files against their sha256, memory chunk by
 * chunk (memory-reader.ts). So nothing damaged reaches a restore, whatever it reads first.
 */

const MAX_BLOB_BYTES = 1024 * 1024 * 1024;
const MAX_TRAFFIC_BYTES = 256 * 1024 * 1024;

export async function loadManifest(dir: string, name: string): Promise<Manifest> {
  const label = `${name}/${MANIFEST_FILE}`;
  return decodeManifest(label, await readLimited(join(dir, MANIFEST_FILE), label, MAX_MANIFEST_BYTES), name);
}

export class SnapshotReader {
  readonly name: string;
  /** The snapshot's directory. */
  readonly path: string;
  #manifest: Manifest;
  #files: Map<string, ManifestFile>;
  readonly #memories = new Map<string, Promise<VmMemoryReader>>();
  /** Read and checked once per reader (preflight and the restore both ask); a refinement drops it. */
  readonly #workingSets = new Map<string, Promise<WorkingSetWithCopies>>();
  #updates: Promise<void> = Promise.resolve();

  private constructor(dir: string, manifest: Manifest) {
    this.name = manifest.name;
    this.path = dir;
    this.#manifest = manifest;
    this.#files = new Map(manifest.files.map((file) => [file.path, file]));
  }

  static async open(dir: string, name: string): Promise<SnapshotReader> {
    const manifest = await loadManifest(dir, name);
    for (const file of manifest.files) {
      const label = `${name}/${file.path}`;
      const stats = await lstat(resolveInside(dir, file.path)).catch((error: unknown) => {
        throw readError(label, error);
      });
      if (!stats.isFile()) throw corrupt(label, "not a regular file");
      if (stats.size !== file.size) {
        throw corrupt(
          label,
          `size ${stats.size} bytes, the manifest says ${file.size} (truncated or extended)`,
        );
      }
    }
    return new SnapshotReader(dir, manifest);
  }

  get manifest(): Manifest {
    return this.#manifest;
  }

  get spec(): JsonValue {
    return this.#manifest.spec;
  }

  vmNames(): string[] {
    return this.#manifest.vms.map((vm) => vm.name);
  }

  vm(name: string): ManifestVm {
    const vm = this.#manifest.vms.find((candidate) => candidate.name === name);
    if (vm === undefined) throw badInput(`snapshot ${this.name} has no VM ${name}`);
    return vm;
  }

  #label(path: string): string {
    return `${this.name}/${path}`;
  }

  /** Reads a listed file and checks its size and sha256. */
  async #readVerified(path: string, maxBytes: number): Promise<Buffer> {
    const label = this.#label(path);
    const entry = this.#files.get(path);
    if (entry === undefined) throw corrupt(label, "not listed in the manifest");
    if (entry.size > maxBytes) throw corrupt(label, `${entry.size} bytes, more than the ${maxBytes} allowed`);
    const bytes = await readLimited(resolveInside(this.path, path), label, entry.size);
    if (bytes.length !== entry.size) {
      throw corrupt(label, `size ${bytes.length} bytes, expected ${entry.size}`);
    }
    if (sha256Hex(bytes) !== entry.sha256) throw corrupt(label, "checksum mismatch");
    return bytes;
  }

  /** The VM's memory; opening it loads and checks its indexes. Closed by `close()`. */
  memory(vm: string): Promise<VmMemoryReader> {
    const entry = this.vm(vm);
    let memory = this.#memories.get(vm);
    if (memory === undefined) {
      memory = VmMemoryReader.open(
        this.path,
        (path) => this.#label(path),
        entry,
        this.#files,
        (path) => this.#readVerified(path, MAX_BLOB_BYTES),
      );
      this.#memories.set(vm, memory);
      void memory.catch(() => this.#memories.delete(vm));
    }
    return memory;
  }

  deviceState(vm: string): Promise<Buffer> {
    return this.#readVerified(this.vm(vm).deviceState, MAX_BLOB_BYTES);
  }

  configuration(vm: string): Promise<Buffer> {
    return this.#readVerified(this.vm(vm).configuration, MAX_BLOB_BYTES);
  }

  ramStart(vm: string): Promise<Buffer> {
    return this.#readVerified(this.vm(vm).ramStart, MAX_BLOB_BYTES);
  }

  /** Names of the files added with `addVmFile` (e.g. "disk.qcow2"). */
  vmFileNames(vm: string): string[] {
    return this.vm(vm).extraFiles.map((extra) => extra.name);
  }

  /**
   * Path of a file added with `addVmFile`. Its size was checked by `open`; its content is checked
   * by `verifyVmFile` (or `verify`), which reads it whole: call it before using the file.
   */
  vmFilePath(vm: string, name: string): string {
    const extra = this.vm(vm).extraFiles.find((candidate) => candidate.name === name);
    if (extra === undefined) throw badInput(`snapshot ${this.name}: VM ${vm} has no file ${name}`);
    return resolveInside(this.path, extra.file);
  }

  async verifyVmFile(vm: string, name: string): Promise<void> {
    const extra = this.vm(vm).extraFiles.find((candidate) => candidate.name === name);
    if (extra === undefined) throw badInput(`snapshot ${this.name}: VM ${vm} has no file ${name}`);
    const label = this.#label(extra.file);
    const { sha256 } = await sha256OfFile(resolveInside(this.path, extra.file), label);
    if (sha256 !== this.#files.get(extra.file)?.sha256) throw corrupt(label, "checksum mismatch");
  }

  async workingSet(vm: string): Promise<WorkingSetEntry[]> {
    return (await this.workingSetWithCopies(vm)).entries;
  }

  workingSetWithCopies(vm: string): Promise<WorkingSetWithCopies> {
    let read = this.#workingSets.get(vm);
    if (read === undefined) {
      read = this.#readWorkingSet(vm);
      this.#workingSets.set(vm, read);
      void read.catch(() => this.#workingSets.delete(vm));
    }
    return read;
  }

  async #readWorkingSet(vm: string): Promise<WorkingSetWithCopies> {
    const entry = this.vm(vm);
    const label = this.#label(entry.workingSet.file);
    // Matched against the manifest's sha256: the envelope's own need not be computed again (up
    // to 16 MiB of page copies, ~20 ms before the first QEMU starts).
    const { slots, copies } = decodeWorkingSetFile(
      label,
      await this.#readVerified(entry.workingSet.file, MAX_BLOB_BYTES),
      true,
    );
    checkWorkingSet(
      label,
      slots,
      entry.blocks.map((block) => block.pages),
    );
    if (slots.length !== entry.workingSet.pages) {
      throw corrupt(label, "entry count differs from the manifest");
    }
    return { entries: entriesFromSlots(slots, entry.blocks), copies };
  }

  async inflight(): Promise<InflightFrame[]> {
    const path = this.#manifest.inflight.file;
    const frames = decodeInflight(this.#label(path), await this.#readVerified(path, MAX_BLOB_BYTES));
    if (frames.length !== this.#manifest.inflight.frames) {
      throw corrupt(this.#label(path), "frame count differs from the manifest");
    }
    return frames;
  }

  /** The traffic log and graph as the switch gave them; null if none was saved. */
  async traffic(): Promise<JsonValue | null> {
    const path = this.#manifest.traffic;
    if (path === null) return null;
    const bytes = await this.#readVerified(path, MAX_TRAFFIC_BYTES);
    try {
      return JSON.parse(bytes.toString("utf8")) as JsonValue;
    } catch (error) {
      throw corrupt(this.#label(path), "not valid JSON", error);
    }
  }

  summary(): Promise<SnapshotSummary> {
    return summarize(this.path, this.#manifest);
  }

  /**
   * Replaces the VM's working set (a restore refined it). Crash-safe: the new list goes to a new
   * file, then the manifest is replaced atomically, then the old file is removed. Calls on one
   * reader run one after another; the manifest is re-read from disk first.
   */
  replaceWorkingSet(vm: string, entries: readonly WorkingSetEntry[]): Promise<void> {
    const run = this.#updates.then(() => this.#replaceWorkingSet(vm, entries));
    this.#updates = run.catch(() => undefined);
    return run;
  }

  async #replaceWorkingSet(vmName: string, entries: readonly WorkingSetEntry[]): Promise<void> {
    const current = await loadManifest(this.path, this.name);
    const vm = current.vms.find((candidate) => candidate.name === vmName);
    if (vm === undefined) throw badInput(`snapshot ${this.name} has no VM ${vmName}`);
    const slots = slotsFromEntries(vmName, entries, vm.blocks);
    const generation = vm.workingSet.generation + 1;
    const path = workingSetFile(vmName, generation);
    const copies = await this.#copyPages(vmName, entriesFromSlots(slots, vm.blocks));
    const bytes = encodeWorkingSet(slots, copies);
    await writeDurable(resolveInside(this.path, path), this.#label(path), bytes);
    await fsyncDir(resolveInside(this.path, `vms/${vmName}`));
    const old = vm.workingSet.file;
    const { checksum: _checksum, ...body } = current;
    const next = {
      ...body,
      vms: body.vms.map((item) =>
        item === vm ? { ...item, workingSet: { file: path, pages: slots.length, generation } } : item,
      ),
      files: [
        ...body.files.filter((file) => file.path !== old),
        { path, size: bytes.length, sha256: sha256Hex(bytes), scope: "file" as const },
      ],
    };
    const encoded = encodeManifest(next);
    await replaceAtomically(join(this.path, MANIFEST_FILE), this.#label(MANIFEST_FILE), encoded);
    this.#manifest = decodeManifest(this.#label(MANIFEST_FILE), encoded, this.name);
    this.#files = new Map(this.#manifest.files.map((file) => [file.path, file]));
    this.#workingSets.delete(vmName);
    if (old !== path) await rm(resolveInside(this.path, old), { force: true });
  }

  /** The contents of the first WORKING_SET_COPY_PAGES entries, through checked chunk reads. */
  async #copyPages(vmName: string, entries: readonly WorkingSetEntry[]): Promise<Buffer> {
    const count = Math.min(entries.length, WORKING_SET_COPY_PAGES);
    if (count === 0) return Buffer.alloc(0);
    return (await this.memory(vmName)).copyPages(entries.slice(0, count));
  }

  /** Closes the memory readers' files. */
  async close(): Promise<void> {
    const memories = [...this.#memories.values()];
    this.#memories.clear();
    await Promise.all(
      memories.map((memory) => memory.then((reader) => reader.close()).catch(() => undefined)),
    );
  }
}
