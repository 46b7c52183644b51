import { lstat, mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import { isHrError } from "../../util/errors.ts";
import { badInput, corrupt, writeError } from "./errors.ts";
import { fsyncFile, readLimited, sha256Hex, sha256OfFile, writeDurable } from "./fs-io.ts";
import { extraFile, resolveInside, vmBlobFile, workingSetFile, type VmBlobKind } from "./layout.ts";
import type { JsonValue, ManifestFile, ManifestVm } from "./manifest.ts";
import { VmMemoryReader } from "./memory-reader.ts";
import { MemoryImageWriter, type BlockSpec } from "./memory-writer.ts";
import {
  encodeWorkingSet,
  entriesFromSlots,
  slotsFromEntries,
  WORKING_SET_COPY_PAGES,
  type WorkingSetEntry,
  type WorkingSetSlot,
} from "./working-set-file.ts";

/** An index file is 1 bit and 32 bytes per 16 pages: 64 MiB covers 1 TiB of RAM. */
const MAX_INDEX_BYTES = 64 * 1024 * 1024;

/**
 * One VM of a snapshot being written: its memory image (memory-writer.ts), its opaque blobs
 * (device state, migration configuration, ram-start section) and its working set. Blobs are
 * written and fsynced when set; the working set and the indexes at `finish()`. Every I/O error
 * goes through `hooks.onError`, which aborts the whole snapshot (the builder's policy).
 */

export interface WriterHooks {
  /** Aborts the snapshot on I/O errors (the builder's policy), then rethrows. */
  onError: (error: unknown) => Promise<never>;
  /** Throws SNAPSHOT_CLOSED once the snapshot is committed or aborted. */
  checkOpen: () => void;
}

export class VmSnapshotWriter {
  readonly name: string;
  readonly #dir: string;
  readonly #label: string;
  readonly #memory: MemoryImageWriter;
  readonly #blocks: { id: string; pages: number }[];
  readonly #machine: JsonValue;
  readonly #onError: (error: unknown) => Promise<never>;
  readonly #checkOpen: () => void;
  readonly #blobs = new Map<VmBlobKind, ManifestFile>();
  readonly #extras = new Map<string, ManifestFile>();
  #workingSet: WorkingSetSlot[] = [];

  constructor(
    name: string,
    dir: string,
    label: string,
    memory: MemoryImageWriter,
    blocks: readonly BlockSpec[],
    machine: JsonValue,
    hooks: WriterHooks,
  ) {
    this.name = name;
    this.#dir = dir;
    this.#label = label;
    this.#memory = memory;
    this.#blocks = blocks.map((block) => ({ id: block.id, pages: block.usedLength / 4096 }));
    this.#machine = machine;
    this.#onError = hooks.onError;
    this.#checkOpen = hooks.checkOpen;
  }

  /**
   * Stores one page: `offsetBytes` within block `blockId` (page-aligned), `data` 4096 bytes or
   * "zero". Any order; a page written again replaces the earlier version. Await each call.
   */
  writePage(blockId: string, offsetBytes: number, data: Buffer | "zero"): Promise<void> {
    return this.#memory.writePage(blockId, offsetBytes, data).catch(this.#onError);
  }

  /** QEMU's device state for this VM (opaque). Required before commit. */
  setDeviceState(bytes: Buffer): Promise<void> {
    return this.#setBlob("deviceState", bytes);
  }

  /** QEMU's migration configuration section (opaque); empty if never set. */
  setConfiguration(bytes: Buffer): Promise<void> {
    return this.#setBlob("configuration", bytes);
  }

  /** The ram-start section (opaque); empty if never set. */
  setRamStart(bytes: Buffer): Promise<void> {
    return this.#setBlob("ramStart", bytes);
  }

  /** The ordered working set; pages listed twice keep their first position. */
  setWorkingSet(entries: readonly WorkingSetEntry[]): void {
    this.#checkOpen();
    this.#workingSet = slotsFromEntries(this.name, entries, this.#blocks);
  }

  /**
   * Adds a file made by someone else (e.g. `qemu-img convert` of the disk at the cut):
   * `produce` writes it at the path it is given; the store then fsyncs and checksums it.
   */
  async addFile(name: string, produce: (destination: string) => Promise<void>): Promise<void> {
    this.#checkOpen();
    const path = extraFile(this.name, name);
    if (this.#extras.has(name)) throw badInput(`VM ${this.name}: file ${name} added twice`);
    const label = `${this.#label}/${path}`;
    const destination = resolveInside(this.#dir, path);
    try {
      await mkdir(dirname(destination), { recursive: true });
      await produce(destination);
      const stats = await lstat(destination);
      if (!stats.isFile()) throw badInput(`${label}: was not produced as a regular file`);
      await fsyncFile(destination);
      const { sha256, size } = await sha256OfFile(destination, label);
      this.#extras.set(name, { path, size, sha256, scope: "file" });
    } catch (error) {
      await this.#onError(isHrError(error) ? error : writeError(label, error));
    }
  }

  hasDeviceState(): boolean {
    return this.#blobs.has("deviceState");
  }

  async #setBlob(kind: VmBlobKind, bytes: Buffer): Promise<void> {
    this.#checkOpen();
    if (!Buffer.isBuffer(bytes)) throw badInput(`VM ${this.name}: ${kind} must be a Buffer`);
    const path = vmBlobFile(this.name, kind);
    try {
      await writeDurable(resolveInside(this.#dir, path), `${this.#label}/${path}`, bytes);
    } catch (error) {
      await this.#onError(error);
    }
    this.#blobs.set(kind, { path, size: bytes.length, sha256: sha256Hex(bytes), scope: "file" });
  }

  /** Finishes the memory image and writes the working set; returns the VM's manifest entry and files. */
  async finish(pauseMs: number | null): Promise<{ vm: ManifestVm; files: ManifestFile[] }> {
    for (const kind of ["configuration", "ramStart"] as const) {
      if (!this.#blobs.has(kind)) await this.#setBlob(kind, Buffer.alloc(0));
    }
    const blocks = await this.#memory.finish().catch(this.#onError);
    const wsPath = workingSetFile(this.name, 0);
    const files: ManifestFile[] = [...this.#blobs.values(), ...this.#extras.values()];
    for (const block of blocks) {
      files.push({ path: block.file, size: block.usedLength, sha256: block.rawDigest, scope: "chunks" });
      files.push({ path: block.index, size: block.indexSize, sha256: block.indexSha256, scope: "file" });
    }
    const vm: ManifestVm = {
      name: this.name,
      ramBytes: blocks.reduce((sum, block) => sum + block.usedLength, 0),
      pauseMs,
      machine: this.#machine,
      blocks: blocks.map(({ id, usedLength, pages, presentPages, file, index }) => ({
        id,
        usedLength,
        pages,
        presentPages,
        file,
        index,
      })),
      deviceState: vmBlobFile(this.name, "deviceState"),
      configuration: vmBlobFile(this.name, "configuration"),
      ramStart: vmBlobFile(this.name, "ramStart"),
      workingSet: { file: wsPath, pages: this.#workingSet.length, generation: 0 },
      extraFiles: [...this.#extras].map(([name, entry]) => ({ name, file: entry.path })),
    };
    const copies = await this.#copies(vm, files).catch(this.#onError);
    const wsBytes = encodeWorkingSet(this.#workingSet, copies);
    await writeDurable(resolveInside(this.#dir, wsPath), `${this.#label}/${wsPath}`, wsBytes).catch(
      this.#onError,
    );
    files.push({ path: wsPath, size: wsBytes.length, sha256: sha256Hex(wsBytes), scope: "file" });
    return { vm, files };
  }

  /**
   * The working set's first pages, read back through the store's checked reader from the image
   * just written (its chunk checksums were computed from these bytes), so even the first restore
   * of a snapshot loads its W0 in one sequential read.
   */
  async #copies(vm: ManifestVm, files: readonly ManifestFile[]): Promise<Buffer | undefined> {
    const count = Math.min(this.#workingSet.length, WORKING_SET_COPY_PAGES);
    if (count === 0) return undefined;
    const byPath = new Map(files.map((file) => [file.path, file]));
    const label = (path: string): string => `${this.#label}/${path}`;
    const memory = await VmMemoryReader.open(this.#dir, label, vm, byPath, async (path) => {
      const bytes = await readLimited(resolveInside(this.#dir, path), label(path), MAX_INDEX_BYTES);
      if (sha256Hex(bytes) !== byPath.get(path)?.sha256) throw corrupt(label(path), "checksum mismatch");
      return bytes;
    });
    try {
      return await memory.copyPages(entriesFromSlots(this.#workingSet.slice(0, count), vm.blocks));
    } finally {
      await memory.close();
    }
  }

  /** Abandons the VM: closes the memory image's files. */
  close(): Promise<void> {
    return this.#memory.close();
  }
}
