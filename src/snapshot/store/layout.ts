import { isAbsolute, join, normalize, sep } from "node:path";
import { HrError } from "../../util/errors.ts";

/**
 * On-disk layout of the snapshot store (format version 1). Everything below `<root>` is written
 * only by `SnapshotStore`; one directory per committed snapshot:
 *
 *   <root>/
 *     <name>/                          committed snapshot; name = [a-z0-9][a-z0-9._-]{0,63}
 *       manifest.json                  written last; zod-validated; sha256 of every other file
 *       traffic.json                   opaque JSON from the switch (traffic log and graph)
 *       inflight.bin                   frames in flight at the cut          (inflight-file.ts)
 *       vms/<vm>/
 *         device.bin                   QEMU device state (opaque bytes)
 *         config.bin                   QEMU migration configuration section (opaque bytes)
 *         ramstart.bin                 opaque bytes
 *         workingset.bin               ordered working set                  (working-set-file.ts)
 *         workingset-<n>.bin           ... after the n-th refinement (the manifest names the live one)
 *         ram/<block>.raw              sparse raw image: page N at byte N*4096, zero pages are holes
 *         ram/<block>.idx              present-page bitmap + per-chunk checksums (memory-index.ts)
 *         files/<file>                 files added by the caller (e.g. the disk image at the cut)
 *     .tmp-<name>-<host>-<pid>-<rand>/  a snapshot being written (never listed; cleanupStale)
 *     .trash-<name>-<rand>/            a snapshot being removed (never listed; cleanupStale)
 *
 * Commit protocol: every file is written and fsynced inside the `.tmp-*` directory, then its
 * directories are fsynced, then `manifest.json` is written and fsynced, then the directory is
 * renamed to `<name>` and `<root>` is fsynced. A crash at any point leaves either no `<name>`
 * or a complete one. Later updates (the working set) write a new file, then replace the manifest
 * atomically (temp + fsync + rename), then delete the old file.
 *
 * `<block>` is the RAM block id (e.g. `0000:00:02.0/vga.vram`, `/rom@etc/acpi/tables`, `pc.ram`)
 * with every byte outside [A-Za-z0-9._-] written as %XX (and a leading '.' too), so the mapping
 * is reversible and can never produce `/`, `.` or `..`. Ids whose encoding would pass 200 bytes
 * fall back to `~<sha256 prefix>` (the manifest keeps the id). Paths in the manifest are checked
 * to stay inside the snapshot directory before anything is opened.
 */

export const PAGE_SIZE = 4096;
/**
 * Pages per checksummed chunk: 16 pages = 64 KiB. A page is only handed to a guest once its whole
 * chunk was read and checked, so the chunk is what a scattered working-set prefetch pays per page:
 * 1 MiB chunks made a 1024-page W0 read and hash up to 1 GiB (restores took ~0.6 s to get ready).
 */
export const CHUNK_PAGES = 16;
export const CHUNK_BYTES = PAGE_SIZE * CHUNK_PAGES;

export const MANIFEST_FILE = "manifest.json";
export const TRAFFIC_FILE = "traffic.json";
export const INFLIGHT_FILE = "inflight.bin";
export const TEMP_PREFIX = ".tmp-";
export const TRASH_PREFIX = ".trash-";

export const SNAPSHOT_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
export const VM_DIR_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const MAX_ENCODED_BLOCK = 200;
const SAFE_BYTE = /^[A-Za-z0-9._-]$/;

export function checkSnapshotName(name: string): void {
  if (!SNAPSHOT_NAME_RE.test(name)) {
    throw new HrError("SNAPSHOT_BAD_NAME", `invalid snapshot name ${JSON.stringify(name)}`, {
      hint: "use 1-64 characters: lower-case letters, digits, '.', '_' or '-', starting with a letter or digit",
    });
  }
}

export function checkVmName(name: string): void {
  if (!VM_DIR_NAME_RE.test(name)) {
    throw new HrError("SNAPSHOT_BAD_INPUT", `invalid VM name ${JSON.stringify(name)} for the snapshot store`);
  }
}

/** Block id → file stem (without extension); reversible by `decodeBlockFileName` unless hashed. */
export function encodeBlockFileName(blockId: string, hashed: (id: string) => string): string {
  if (blockId.length === 0) throw new HrError("SNAPSHOT_BAD_INPUT", "a RAM block id cannot be empty");
  let out = "";
  for (const byte of Buffer.from(blockId, "utf8")) {
    const char = String.fromCharCode(byte);
    const escape = !SAFE_BYTE.test(char) || (out.length === 0 && char === ".");
    out += escape ? `%${byte.toString(16).toUpperCase().padStart(2, "0")}` : char;
  }
  return out.length <= MAX_ENCODED_BLOCK ? out : `~${hashed(blockId)}`;
}

/** File stem → block id; undefined for a hashed stem or anything `encodeBlockFileName` cannot produce. */
export function decodeBlockFileName(stem: string): string | undefined {
  if (stem.length === 0 || stem.length > MAX_ENCODED_BLOCK || stem.startsWith(".")) return undefined;
  const bytes: number[] = [];
  for (let i = 0; i < stem.length; i++) {
    const char = stem.charAt(i);
    if (char === "%") {
      const hex = stem.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) return undefined;
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else if (SAFE_BYTE.test(char)) {
      bytes.push(char.charCodeAt(0));
    } else {
      return undefined;
    }
  }
  const id = Buffer.from(bytes).toString("utf8");
  return encodeBlockFileName(id, () => "") === stem ? id : undefined;
}

/** Relative paths (always '/'-separated, as stored in the manifest). */
export function vmDir(vm: string): string {
  return `vms/${vm}`;
}

export function rawFile(vm: string, stem: string): string {
  return `vms/${vm}/ram/${stem}.raw`;
}

export function indexFile(vm: string, stem: string): string {
  return `vms/${vm}/ram/${stem}.idx`;
}

export function workingSetFile(vm: string, generation: number): string {
  return generation === 0 ? `vms/${vm}/workingset.bin` : `vms/${vm}/workingset-${generation}.bin`;
}

export const VM_BLOB_FILES = {
  deviceState: "device.bin",
  configuration: "config.bin",
  ramStart: "ramstart.bin",
} as const;
export type VmBlobKind = keyof typeof VM_BLOB_FILES;

export const EXTRA_FILE_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** A file the caller adds to a VM (`addVmFile`), e.g. `disk.qcow2`. */
export function extraFile(vm: string, name: string): string {
  if (!EXTRA_FILE_NAME_RE.test(name)) {
    throw new HrError("SNAPSHOT_BAD_INPUT", `invalid file name ${JSON.stringify(name)} for VM ${vm}`, {
      hint: "use 1-64 characters: lower-case letters, digits, '.', '_' or '-', starting with a letter or digit",
    });
  }
  return `vms/${vm}/files/${name}`;
}

export function vmBlobFile(vm: string, kind: VmBlobKind): string {
  return `vms/${vm}/${VM_BLOB_FILES[kind]}`;
}

const SAFE_SEGMENT = /^[A-Za-z0-9%~_-][A-Za-z0-9%~._-]{0,254}$/;

/** True when a manifest path is relative, '/'-separated and made of safe segments only. */
export function isSafeRelativePath(path: string): boolean {
  if (path.length === 0 || path.length > 1024) return false;
  return path.split("/").every((segment) => SAFE_SEGMENT.test(segment));
}

/** Absolute path of a manifest path inside `dir`; refuses anything that would leave it. */
export function resolveInside(dir: string, path: string): string {
  const joined = normalize(join(dir, ...path.split("/")));
  if (!isSafeRelativePath(path) || isAbsolute(path) || !joined.startsWith(normalize(dir) + sep)) {
    throw new HrError("SNAPSHOT_CORRUPT", `${path}: not a safe path inside the snapshot`);
  }
  return joined;
}
