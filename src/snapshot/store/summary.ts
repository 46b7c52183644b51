import { lstat } from "node:fs/promises";
import { readError } from "./errors.ts";
import { MANIFEST_FILE, resolveInside } from "./layout.ts";
import { vmFiles, type Manifest } from "./manifest.ts";

export { vmFiles } from "./manifest.ts";

/**
 * The figures `snapshots`, `snapshot inspect` and `snapshot --json` show, from the manifest and
 * the file system (allocated bytes: `stat.blocks * 512`, so holes of the raw images count zero).
 */

export interface VmSummary {
  name: string;
  ramBytes: number;
  /** Bytes allocated on disk by this VM's files. */
  storedBytes: number;
  pages: number;
  presentPages: number;
  zeroPages: number;
  workingSetPages: number;
  pauseMs: number | null;
  /** Paths relative to the snapshot directory. */
  files: string[];
}

export interface SnapshotSummary {
  name: string;
  /** The snapshot's directory. */
  path: string;
  createdAt: string;
  formatVersion: number;
  pauseMs: number | null;
  ramBytes: number;
  /** Bytes allocated on disk by every file of the snapshot, the manifest included. */
  storedBytes: number;
  inflightFrames: number;
  vms: VmSummary[];
}

async function allocated(dir: string, label: string, path: string): Promise<number> {
  try {
    const stats = await lstat(resolveInside(dir, path));
    return stats.blocks * 512;
  } catch (error) {
    throw readError(`${label}/${path}`, error);
  }
}

export async function summarize(dir: string, manifest: Manifest): Promise<SnapshotSummary> {
  const label = manifest.name;
  const sizes = new Map<string, number>();
  for (const path of [MANIFEST_FILE, ...manifest.files.map((file) => file.path)]) {
    sizes.set(path, await allocated(dir, label, path));
  }
  const vms = manifest.vms.map((vm): VmSummary => {
    const pages = vm.blocks.reduce((sum, block) => sum + block.pages, 0);
    const presentPages = vm.blocks.reduce((sum, block) => sum + block.presentPages, 0);
    const files = vmFiles(vm);
    return {
      name: vm.name,
      ramBytes: vm.ramBytes,
      storedBytes: files.reduce((sum, path) => sum + (sizes.get(path) ?? 0), 0),
      pages,
      presentPages,
      zeroPages: pages - presentPages,
      workingSetPages: vm.workingSet.pages,
      pauseMs: vm.pauseMs,
      files,
    };
  });
  return {
    name: manifest.name,
    path: dir,
    createdAt: manifest.createdAt,
    formatVersion: manifest.formatVersion,
    pauseMs: manifest.pauseMs,
    ramBytes: vms.reduce((sum, vm) => sum + vm.ramBytes, 0),
    storedBytes: [...sizes.values()].reduce((sum, size) => sum + size, 0),
    inflightFrames: manifest.inflight.frames,
    vms,
  };
}
