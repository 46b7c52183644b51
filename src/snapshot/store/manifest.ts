import { createHash } from "node:crypto";
import { z } from "zod";
import { HrError, messageOf } from "../../util/errors.ts";
import { corrupt, unsupportedVersion } from "./errors.ts";
import { indexFileSize } from "./memory-index.ts";
import {
  EXTRA_FILE_NAME_RE,
  isSafeRelativePath,
  PAGE_SIZE,
  SNAPSHOT_NAME_RE,
  VM_DIR_NAME_RE,
} from "./layout.ts";

/**
 * `manifest.json`: the snapshot's table of contents, written last (its presence inside a
 * committed directory means every file it lists was fsynced before it).
 *
 * - `formatVersion` 1. Versioning rule: the schema is strict, so any change to it (a new field
 *   included) bumps the version, and an older reader refuses a newer manifest
 *   (SNAPSHOT_VERSION_UNSUPPORTED, "upgrade HotRestore"). The checksum scheme below is fixed
 *   across versions, so it is checked first.
 * - `checksum`: "sha256:" + sha256 of the canonical JSON (keys sorted at every level, no
 *   whitespace) of the manifest without its `checksum` field. The file itself must be exactly
 *   `JSON.stringify(manifest, null, 2)` plus a newline (keys in the file's own order), so a
 *   changed byte anywhere is caught, whitespace included.
 * - `files`: every file of the snapshot but the manifest, with its size and sha256. For a raw
 *   memory image (`scope: "chunks"`) the sha256 is over its index's chunk checksum table (the raw
 *   file itself is checked chunk by chunk); for every other file (`scope: "file"`) over its bytes.
 * - `spec`, `machine`: opaque JSON stored as given.
 *
 * Read order: size limit (caller) → UTF-8 → JSON → checksum → version → exact bytes → zod → cross
 * checks (unique names, every referenced file listed, sizes consistent with the page counts).
 */

export const FORMAT_VERSION = 1;
export const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);
const safePath = z.string().refine(isSafeRelativePath, { message: "not a safe relative path" });
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const millis = z.number().min(0).max(1e12).nullable();

const fileEntrySchema = z.strictObject({
  path: safePath,
  size: count,
  sha256: sha256Hex,
  scope: z.enum(["file", "chunks"]),
});

const blockSchema = z.strictObject({
  id: z.string().min(1).max(256),
  usedLength: count,
  pages: z
    .number()
    .int()
    .min(0)
    .max(2 ** 32 - 1),
  presentPages: count,
  file: safePath,
  index: safePath,
});

const vmSchema = z.strictObject({
  name: z.string().regex(VM_DIR_NAME_RE),
  ramBytes: count,
  pauseMs: millis,
  machine: z.json(),
  blocks: z.array(blockSchema).max(1024),
  deviceState: safePath,
  configuration: safePath,
  ramStart: safePath,
  workingSet: z.strictObject({ file: safePath, pages: count, generation: count }),
  /** Files added by the caller, e.g. the disk image at the cut. */
  extraFiles: z.array(z.strictObject({ name: z.string().regex(EXTRA_FILE_NAME_RE), file: safePath })).max(64),
});

export const manifestSchema = z.strictObject({
  formatVersion: z.literal(FORMAT_VERSION),
  name: z.string().regex(SNAPSHOT_NAME_RE),
  createdAt: z.iso.datetime(),
  pauseMs: millis,
  spec: z.json(),
  traffic: safePath.nullable(),
  inflight: z.strictObject({ file: safePath, frames: count }),
  vms: z.array(vmSchema).min(1).max(4096),
  files: z.array(fileEntrySchema).max(1_000_000),
  checksum: z.string().regex(/^sha256:[0-9a-f]{64}$/),
});

export type Manifest = z.output<typeof manifestSchema>;
export type ManifestBody = Omit<Manifest, "checksum">;
export type ManifestVm = Manifest["vms"][number];
export type ManifestBlock = ManifestVm["blocks"][number];
export type ManifestFile = Manifest["files"][number];
export type JsonValue = Manifest["spec"];

/** JSON with keys sorted at every level: the same value always gives the same bytes. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, item]) => item !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([key, item]) => `${JSON.stringify(key)}:${canonicalJson(item)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

function checksumOf(body: unknown): string {
  return `sha256:${createHash("sha256").update(canonicalJson(body)).digest("hex")}`;
}

export function encodeManifest(body: ManifestBody): Buffer {
  const manifest: Manifest = { ...body, checksum: checksumOf(body) };
  return Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`, "utf8");
}

const UTF8 = new TextDecoder("utf-8", { fatal: true });

/** Parses and checks a manifest; `file` labels errors, `dirName` is the snapshot's directory. */
export function decodeManifest(file: string, bytes: Buffer, dirName?: string): Manifest {
  try {
    return decodeChecked(file, bytes, dirName);
  } catch (error) {
    // e.g. RangeError from JSON nested deeper than the stack allows: still damage, never a crash.
    if (error instanceof HrError) throw error;
    throw corrupt(file, `cannot be read: ${messageOf(error)}`, error);
  }
}

function decodeChecked(file: string, bytes: Buffer, dirName: string | undefined): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(UTF8.decode(bytes));
  } catch (error) {
    throw corrupt(file, "not valid UTF-8 JSON", error);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) throw corrupt(file, "not a JSON object");
  const { checksum, ...body } = raw as Record<string, unknown>;
  const version = (raw as { formatVersion?: unknown }).formatVersion;
  const newer = typeof version === "number" && version > FORMAT_VERSION;
  if (checksum !== checksumOf(body)) {
    const claim = newer
      ? ` (it claims format version ${version}; a newer HotRestore may have written it)`
      : "";
    throw corrupt(file, `checksum mismatch: the manifest was modified or damaged${claim}`);
  }
  if (newer) throw unsupportedVersion(file, version, FORMAT_VERSION);
  if (!bytes.equals(Buffer.from(`${JSON.stringify(raw, null, 2)}\n`, "utf8"))) {
    throw corrupt(file, "extra or changed bytes outside the JSON values (the file was edited or damaged)");
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue === undefined ? "" : `${issue.path.join(".") || "(root)"}: `;
    throw corrupt(file, `invalid: ${where}${issue?.message ?? "schema mismatch"}`);
  }
  const manifest = parsed.data;
  if (dirName !== undefined && manifest.name !== dirName) {
    throw corrupt(file, `names snapshot ${manifest.name} but lies in directory ${dirName}`);
  }
  checkConsistency(file, manifest);
  return manifest;
}

function checkConsistency(file: string, manifest: Manifest): void {
  const files = new Map<string, ManifestFile>();
  for (const entry of manifest.files) {
    if (files.has(entry.path)) throw corrupt(file, `${entry.path} listed twice`);
    files.set(entry.path, entry);
  }
  const referenced = new Set<string>();
  const listed = (path: string, scope: "file" | "chunks", size?: number): void => {
    referenced.add(path);
    const entry = files.get(path);
    if (entry === undefined) throw corrupt(file, `${path} is referenced but not listed in files`);
    if (entry.scope !== scope) throw corrupt(file, `${path} has scope ${entry.scope}, expected ${scope}`);
    if (size !== undefined && entry.size !== size) {
      throw corrupt(file, `${path} size does not match its pages`);
    }
  };
  const vmNames = new Set<string>();
  for (const vm of manifest.vms) {
    if (vmNames.has(vm.name)) throw corrupt(file, `VM ${vm.name} listed twice`);
    vmNames.add(vm.name);
    checkOwnFiles(file, vm);
    const ids = new Set<string>();
    let ramBytes = 0;
    for (const block of vm.blocks) {
      if (ids.has(block.id)) throw corrupt(file, `VM ${vm.name}: block ${block.id} listed twice`);
      ids.add(block.id);
      if (block.pages * PAGE_SIZE !== block.usedLength || block.presentPages > block.pages) {
        throw corrupt(file, `VM ${vm.name}: block ${block.id} has inconsistent sizes`);
      }
      ramBytes += block.usedLength;
      listed(block.file, "chunks", block.usedLength);
      listed(block.index, "file", indexFileSize(block.pages));
    }
    if (ramBytes !== vm.ramBytes) throw corrupt(file, `VM ${vm.name}: ramBytes does not add up`);
    for (const path of [vm.deviceState, vm.configuration, vm.ramStart, vm.workingSet.file])
      listed(path, "file");
    for (const extra of vm.extraFiles) listed(extra.file, "file");
  }
  listed(manifest.inflight.file, "file");
  if (manifest.traffic !== null) listed(manifest.traffic, "file");
  for (const path of files.keys()) {
    if (!referenced.has(path))
      throw corrupt(file, `${path} is listed but belongs to nothing in the snapshot`);
  }
}

/** Every file of a VM listed in the manifest. */
export function vmFiles(vm: ManifestVm): string[] {
  return [
    vm.deviceState,
    vm.configuration,
    vm.ramStart,
    vm.workingSet.file,
    ...vm.blocks.flatMap((block) => [block.file, block.index]),
    ...vm.extraFiles.map((extra) => extra.file),
  ];
}

/**
 * Every file a VM's restore reads lies in that VM's own directory: a manifest that points one VM
 * at another's device state, memory, working set or disk is refused, even with a valid checksum.
 */
function checkOwnFiles(file: string, vm: ManifestVm): void {
  const own = `vms/${vm.name}/`;
  for (const path of vmFiles(vm)) {
    if (!path.startsWith(own)) throw corrupt(file, `VM ${vm.name}: ${path} lies outside ${own}`);
  }
}
