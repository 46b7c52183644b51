import { lstat, open, type FileHandle } from "node:fs/promises";
import { HrError } from "../../util/errors.ts";
import { rawDigest } from "./chunk-sum.ts";
import { readError } from "./errors.ts";
import { readLimited, sha256Hex, sha256OfFile } from "./fs-io.ts";
import { decodeInflight } from "./inflight-file.ts";
import { MANIFEST_FILE, PAGE_SIZE, resolveInside } from "./layout.ts";
import type { Manifest, ManifestBlock, ManifestFile } from "./manifest.ts";
import { decodeMemoryIndex } from "./memory-index.ts";
import { describeChunks } from "./memory-reader.ts";
import { scanRawImage } from "./raw-image.ts";
import { loadManifest } from "./reader.ts";
import { checkWorkingSet, decodeWorkingSet, decodeWorkingSetFile } from "./working-set-file.ts";

/**
 * `verify`: every check the store knows, over every file, collecting all damage instead of
 * stopping at the first: manifest (checksum, version, schema), each file's presence, size and
 * sha256, each index's structure and its agreement with the manifest, every chunk of every raw
 * image, the structure of the working sets, the in-flight frames and the traffic log, and that
 * each working set's page copies equal the memory image's pages.
 */

export interface Damage {
  /** Path relative to the snapshot directory. */
  file: string;
  problem: string;
}

export interface VerifyReport {
  name: string;
  ok: boolean;
  damages: Damage[];
  checkedFiles: number;
  checkedBytes: number;
  durationMs: number;
}

const WHOLE_READ_LIMIT = 64 * 1024 * 1024;

class Checker {
  readonly damages: Damage[] = [];
  /** Files that exist with the listed size. */
  readonly sized = new Set<string>();
  /** Files whose sha256 matched too (small ones keep their bytes for structure checks). */
  readonly intact = new Map<string, Buffer | undefined>();
  checkedBytes = 0;

  constructor(
    readonly dir: string,
    readonly name: string,
  ) {}

  /** Records damage; an error message of the form "<name>/<path>: problem" names its own file. */
  damage(file: string, problem: unknown): void {
    const text = problem instanceof Error ? problem.message : String(problem);
    const prefix = `${this.name}/`;
    const split = text.indexOf(": ");
    if (text.startsWith(prefix) && split > prefix.length) {
      this.damages.push({ file: text.slice(prefix.length, split), problem: text.slice(split + 2) });
    } else {
      this.damages.push({ file, problem: text });
    }
  }

  /** Runs a check, turning our typed errors into damage; anything else is a bug and propagates. */
  async guard(file: string, check: () => Promise<void> | void): Promise<void> {
    try {
      await check();
    } catch (error) {
      if (!(error instanceof HrError) || error.code === "SNAPSHOT_IO") throw error;
      this.damage(file, error);
    }
  }

  async checkFile(entry: ManifestFile): Promise<void> {
    const path = resolveInside(this.dir, entry.path);
    const label = `${this.name}/${entry.path}`;
    const stats = await lstat(path).catch((error: unknown) => {
      throw readError(label, error);
    });
    if (!stats.isFile()) return this.damage(entry.path, "not a regular file");
    if (stats.size !== entry.size) {
      return this.damage(entry.path, `size ${stats.size} bytes, the manifest says ${entry.size}`);
    }
    this.sized.add(entry.path);
    if (entry.scope === "chunks") return;
    let bytes: Buffer | undefined;
    let sha256: string;
    if (entry.size <= WHOLE_READ_LIMIT) {
      bytes = await readLimited(path, label, WHOLE_READ_LIMIT);
      sha256 = sha256Hex(bytes);
    } else {
      sha256 = (await sha256OfFile(path, label)).sha256;
    }
    this.checkedBytes += entry.size;
    if (sha256 !== entry.sha256) return this.damage(entry.path, "checksum mismatch");
    this.intact.set(entry.path, bytes);
  }

  async checkBlock(block: ManifestBlock, files: ReadonlyMap<string, ManifestFile>): Promise<void> {
    const indexBytes = this.intact.get(block.index);
    if (indexBytes === undefined || !this.sized.has(block.file)) return;
    const index = decodeMemoryIndex(`${this.name}/${block.index}`, indexBytes);
    if (index.pageCount !== block.pages || index.present.count() !== block.presentPages) {
      return this.damage(block.index, "page counts differ from the manifest");
    }
    if (files.get(block.file)?.sha256 !== rawDigest(index.chunkSums)) {
      return this.damage(block.file, "its index's chunk table does not match the manifest");
    }
    const label = `${this.name}/${block.file}`;
    const handle = await open(resolveInside(this.dir, block.file), "r").catch((error: unknown) => {
      throw readError(label, error);
    });
    try {
      const damaged = await scanRawImage(handle, label, block.pages, index.chunkSums);
      if (damaged.length > 0) this.damage(block.file, describeChunks(damaged));
    } finally {
      await handle.close();
    }
    this.checkedBytes += block.usedLength;
  }

  checkStructures(manifest: Manifest): void {
    for (const vm of manifest.vms) {
      const bytes = this.intact.get(vm.workingSet.file);
      if (bytes === undefined) continue;
      const label = `${this.name}/${vm.workingSet.file}`;
      const slots = decodeWorkingSet(label, bytes);
      checkWorkingSet(
        label,
        slots,
        vm.blocks.map((block) => block.pages),
      );
      if (slots.length !== vm.workingSet.pages)
        this.damage(vm.workingSet.file, "entry count differs from the manifest");
    }
    const inflight = this.intact.get(manifest.inflight.file);
    if (inflight !== undefined) {
      const frames = decodeInflight(`${this.name}/${manifest.inflight.file}`, inflight);
      if (frames.length !== manifest.inflight.frames)
        this.damage(manifest.inflight.file, "frame count differs from the manifest");
    }
    const traffic = manifest.traffic === null ? undefined : this.intact.get(manifest.traffic);
    if (manifest.traffic !== null && traffic !== undefined) {
      try {
        JSON.parse(traffic.toString("utf8"));
      } catch {
        this.damage(manifest.traffic, "not valid JSON");
      }
    }
  }

  /** Each working set's page copies against the pages of the memory image they copy. */
  async checkCopies(manifest: Manifest): Promise<void> {
    for (const vm of manifest.vms) {
      const bytes = this.intact.get(vm.workingSet.file);
      if (bytes === undefined) continue;
      const { slots, copies } = decodeWorkingSetFile(`${this.name}/${vm.workingSet.file}`, bytes);
      const differing: number[] = [];
      const page = Buffer.alloc(PAGE_SIZE);
      const handles = new Map<string, FileHandle>();
      try {
        for (let i = 0; i * PAGE_SIZE < copies.length; i++) {
          const slot = slots[i];
          const block = slot === undefined ? undefined : vm.blocks[slot.block];
          if (slot === undefined || block === undefined || !this.sized.has(block.file)) continue;
          let handle = handles.get(block.file);
          if (handle === undefined) {
            const label = `${this.name}/${block.file}`;
            handle = await open(resolveInside(this.dir, block.file), "r").catch((error: unknown) => {
              throw readError(label, error);
            });
            handles.set(block.file, handle);
          }
          page.fill(0);
          await handle.read(page, 0, PAGE_SIZE, slot.page * PAGE_SIZE);
          if (!page.equals(copies.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE))) differing.push(i);
        }
      } finally {
        await Promise.all([...handles.values()].map((handle) => handle.close()));
      }
      if (differing.length > 0) {
        this.damage(
          vm.workingSet.file,
          `the copies of ${differing.length} entries differ from the memory image (first: entry ${differing[0]})`,
        );
      }
    }
  }
}

/** Checks a committed snapshot in `dir`; damage is reported, never thrown (I/O errors are). */
export async function verifySnapshot(dir: string, name: string): Promise<VerifyReport> {
  const started = performance.now();
  const checker = new Checker(dir, name);
  let manifest: Manifest | undefined;
  await checker.guard(MANIFEST_FILE, async () => {
    manifest = await loadManifest(dir, name);
  });
  if (manifest !== undefined) {
    const files = new Map(manifest.files.map((file) => [file.path, file]));
    for (const file of manifest.files) await checker.guard(file.path, () => checker.checkFile(file));
    for (const vm of manifest.vms) {
      for (const block of vm.blocks) await checker.guard(block.index, () => checker.checkBlock(block, files));
    }
    const structured = manifest;
    await checker.guard(MANIFEST_FILE, () => checker.checkStructures(structured));
    await checker.guard(MANIFEST_FILE, () => checker.checkCopies(structured));
  }
  return {
    name,
    ok: checker.damages.length === 0,
    damages: checker.damages,
    checkedFiles: manifest === undefined ? 1 : manifest.files.length + 1,
    checkedBytes: checker.checkedBytes,
    durationMs: performance.now() - started,
  };
}
