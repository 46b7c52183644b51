/**
 * Damages for the corruption test: each applied to a private copy of one pristine snapshot.
 *
 * A copy is a hard-link farm of the pristine directory (cheap: no bytes copied); a file is
 * materialized (copied to a new inode, holes kept) before any damage writes to it, so the
 * pristine snapshot is never touched. Every damage says which names an error about it must
 * mention (a file, or the manifest for edits of the manifest).
 */
import { createHash } from "node:crypto";
import {
  copyFile,
  link,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  symlink,
  truncate,
  unlink,
  writeFile,
} from "node:fs/promises";
import { join, relative } from "node:path";
import { canonicalJson } from "../../src/snapshot/store/manifest.ts";

export type Random = () => number;

export interface AppliedDamage {
  kind: string;
  /** What was done, for failure messages. */
  detail: string;
  /** An error refusing this damage must mention one of these. */
  names: string[];
  /** The damage changes raw memory bytes only (checked chunk by chunk when read, not before start). */
  rawContent: boolean;
  /** Paths (files or directories) the damage changed in the copy: `undo` puts back the pristine ones. */
  touched: string[];
}

export type FileCategory =
  | "manifest"
  | "traffic"
  | "inflight"
  | "raw"
  | "idx"
  | "device"
  | "config"
  | "ramstart"
  | "workingset"
  | "disk";

export function categoryOf(path: string): FileCategory {
  const base = path.split("/").at(-1) ?? "";
  if (base === "manifest.json") return "manifest";
  if (base === "traffic.json") return "traffic";
  if (base === "inflight.bin") return "inflight";
  if (base.endsWith(".raw")) return "raw";
  if (base.endsWith(".idx")) return "idx";
  if (base === "device.bin") return "device";
  if (base === "config.bin") return "config";
  if (base === "ramstart.bin") return "ramstart";
  if (base.startsWith("workingset")) return "workingset";
  return "disk";
}

export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (at: string): Promise<void> => {
    for (const entry of await readdir(at, { withFileTypes: true })) {
      const path = join(at, entry.name);
      if (entry.isDirectory()) await walk(path);
      else out.push(relative(dir, path));
    }
  };
  await walk(dir);
  return out.sort();
}

/** A copy of `pristine` at `copy` made of hard links. */
export async function linkFarm(pristine: string, copy: string, files: readonly string[]): Promise<void> {
  const dirs = new Set(files.map((file) => join(copy, file, "..")));
  for (const dir of [...dirs].sort()) await mkdir(dir, { recursive: true });
  await Promise.all(files.map((file) => link(join(pristine, file), join(copy, file))));
}

/**
 * Copies `from` to `to`. A raw memory image is copied page by page from the pages its index
 * lists (`pages`; the rest of it is holes), so the copy stays sparse and cheap.
 */
export async function copyFileSparse(from: string, to: string, pages?: readonly number[]): Promise<void> {
  if (pages === undefined) return copyFile(from, to);
  const input = await open(from, "r");
  const output = await open(to, "w");
  try {
    const buffer = Buffer.alloc(1 << 20);
    const pagesPerCopy = buffer.length / 4096;
    for (let at = 0; at < pages.length;) {
      // a run of consecutive pages, at most one buffer long
      const first = pages[at] ?? 0;
      let count = 1;
      while (count < pagesPerCopy && pages[at + count] === first + count) count += 1;
      const { bytesRead } = await input.read(buffer, 0, count * 4096, first * 4096);
      await output.write(buffer, 0, bytesRead, first * 4096);
      at += count;
    }
    await output.truncate((await input.stat()).size);
  } finally {
    await input.close();
    await output.close();
  }
}

/** Puts the pristine files back at every path `damage` touched, so the copy can take the next one. */
export async function undo(pristine: Pristine, copy: string, damage: AppliedDamage): Promise<void> {
  for (const path of damage.touched) {
    await rm(join(copy, path), { recursive: true, force: true });
    const under = pristine.files.filter((file) => file === path || file.startsWith(`${path}/`));
    await linkFarm(pristine.dir, copy, under);
  }
}

/** Gives `path` (a hard link into the pristine snapshot) its own inode with the same bytes. */
export async function materialize(path: string, pages?: readonly number[]): Promise<void> {
  await copyFileSparse(path, `${path}.own`, pages);
  await rename(`${path}.own`, path);
}

function pick<T>(random: Random, items: readonly T[]): T {
  const item = items[Math.floor(random() * items.length)];
  if (item === undefined) throw new Error("pick from an empty list");
  return item;
}

function int(random: Random, below: number): number {
  return Math.floor(random() * below);
}

/** Flips one to three bits at random offsets of one file; returns the offsets. */
async function flipBits(
  path: string,
  random: Random,
  offsetOf: () => number,
  pages?: readonly number[],
): Promise<number[]> {
  await materialize(path, pages);
  const handle = await open(path, "r+");
  const offsets: number[] = [];
  try {
    for (let n = 1 + int(random, 3); n > 0; n--) {
      const offset = offsetOf();
      if (offsets.includes(offset)) continue; // two flips of one byte could cancel out
      const byte = Buffer.alloc(1);
      await handle.read(byte, 0, 1, offset);
      byte[0] = (byte[0] ?? 0) ^ (1 << int(random, 8));
      await handle.write(byte, 0, 1, offset);
      offsets.push(offset);
    }
  } finally {
    await handle.close();
  }
  return offsets;
}

/** The pristine snapshot, read once: its files, their sizes, and which raw pages hold data. */
export interface Pristine {
  dir: string;
  files: string[];
  sizes: Map<string, number>;
  sha256: Map<string, string>;
  /** Per raw file: page numbers present in its index (from the store's own decoder). */
  presentPages: Map<string, number[]>;
  vms: string[];
}

const FLIP_CATEGORIES: FileCategory[] = [
  "manifest",
  "traffic",
  "inflight",
  "raw",
  "idx",
  "device",
  "config",
  "ramstart",
  "workingset",
  "disk",
];

export async function flip(pristine: Pristine, copy: string, random: Random): Promise<AppliedDamage> {
  const category = pick(random, FLIP_CATEGORIES);
  const candidates = pristine.files.filter((file) => categoryOf(file) === category);
  // Guest RAM more often than the small ROM blocks.
  const file =
    category === "raw" && random() < 0.7
      ? pick(
          random,
          candidates.filter((path) => path.endsWith("ram0.raw")),
        )
      : pick(random, candidates);
  const size = pristine.sizes.get(file) ?? 0;
  const present = pristine.presentPages.get(file) ?? [];
  const inData = category === "raw" && present.length > 0 && random() < 0.6;
  const offsetOf = (): number =>
    inData ? pick(random, present) * 4096 + int(random, 4096) : int(random, size);
  const offsets = await flipBits(join(copy, file), random, offsetOf, pristine.presentPages.get(file));
  return {
    kind: `flip:${category}${category === "raw" ? (inData ? ":data" : ":anywhere") : ""}`,
    detail: `${file} bits at ${offsets.join(", ")}`,
    names: [file],
    rawContent: category === "raw",
    touched: [file],
  };
}

export async function truncateFile(pristine: Pristine, copy: string, random: Random): Promise<AppliedDamage> {
  const file = pick(random, pristine.files);
  const size = pristine.sizes.get(file) ?? 0;
  const length = random() < 0.2 ? 0 : int(random, size);
  await materialize(join(copy, file), pristine.presentPages.get(file));
  await truncate(join(copy, file), length);
  return {
    kind: "truncate",
    detail: `${file} to ${length} of ${size}`,
    names: [file],
    rawContent: false,
    touched: [file],
  };
}

export async function extendFile(pristine: Pristine, copy: string, random: Random): Promise<AppliedDamage> {
  const file = pick(random, pristine.files);
  await materialize(join(copy, file), pristine.presentPages.get(file));
  const extra = Buffer.alloc(1 + int(random, 4096), int(random, 256));
  const handle = await open(join(copy, file), "a");
  await handle.write(extra).finally(() => handle.close());
  return {
    kind: "extend",
    detail: `${file} + ${extra.length} bytes`,
    names: [file],
    rawContent: false,
    touched: [file],
  };
}

export async function deleteFile(pristine: Pristine, copy: string, random: Random): Promise<AppliedDamage> {
  if (random() < 0.15) {
    const vm = pick(random, pristine.vms);
    const dir = pick(random, [`vms/${vm}`, `vms/${vm}/ram`, `vms/${vm}/files`]);
    await rm(join(copy, dir), { recursive: true });
    return { kind: "delete-dir", detail: dir, names: [dir], rawContent: false, touched: [dir] };
  }
  const file = pick(random, pristine.files);
  await unlink(join(copy, file));
  return { kind: "delete", detail: file, names: [file], rawContent: false, touched: [file] };
}

/** The same file of the two VMs exchanged; null when they hold the same bytes (no damage). */
export async function swapFiles(
  pristine: Pristine,
  copy: string,
  random: Random,
): Promise<AppliedDamage | null> {
  const [a, b] = pristine.vms;
  if (a === undefined || b === undefined) throw new Error("two VMs needed");
  const mine = pick(
    random,
    pristine.files.filter((file) => file.startsWith(`vms/${a}/`)),
  );
  const theirs = `vms/${b}/${mine.slice(`vms/${a}/`.length)}`;
  if (!pristine.files.includes(theirs)) return null;
  if (pristine.sha256.get(mine) === pristine.sha256.get(theirs)) return null;
  await rename(join(copy, mine), join(copy, `${mine}.swap`));
  await rename(join(copy, theirs), join(copy, mine));
  await rename(join(copy, `${mine}.swap`), join(copy, theirs));
  // Raw images have no header: their bytes are checked chunk by chunk when read.
  const rawContent = mine.endsWith(".raw");
  return {
    kind: "swap",
    detail: `${mine} <-> ${theirs}`,
    names: [mine, theirs],
    rawContent,
    touched: [mine, theirs],
  };
}

/** The same file of the other VM (the file itself outside `vms/`). */
export function twinOf(pristine: Pristine, file: string): string {
  const [a, b] = pristine.vms;
  for (const [from, to] of [
    [a, b],
    [b, a],
  ]) {
    if (from !== undefined && to !== undefined && file.startsWith(`vms/${from}/`)) {
      return `vms/${to}/${file.slice(`vms/${from}/`.length)}`;
    }
  }
  return file;
}

export async function symlinkFile(pristine: Pristine, copy: string, random: Random): Promise<AppliedDamage> {
  const file = pick(random, pristine.files);
  const twin = twinOf(pristine, file);
  const target = random() < 0.5 && twin !== file ? join(copy, twin) : "/etc/hostname";
  await unlink(join(copy, file));
  await symlink(target, join(copy, file));
  return {
    kind: "symlink",
    detail: `${file} -> ${target}`,
    names: [file],
    rawContent: false,
    touched: [file],
  };
}

export type ManifestDoc = Record<string, unknown> & {
  vms: Record<string, unknown>[];
  files: Record<string, unknown>[];
};

export async function readManifest(copy: string): Promise<ManifestDoc> {
  return JSON.parse(await readFile(join(copy, "manifest.json"), "utf8")) as ManifestDoc;
}

/** Writes the manifest as the store does; `reseal` recomputes the checksum over the edited body. */
export async function writeManifest(copy: string, doc: ManifestDoc, reseal: boolean): Promise<void> {
  if (reseal) {
    const { checksum: _checksum, ...body } = doc;
    doc = {
      ...body,
      checksum: `sha256:${createHash("sha256").update(canonicalJson(body)).digest("hex")}`,
    };
  }
  await unlink(join(copy, "manifest.json"));
  await writeFile(join(copy, "manifest.json"), `${JSON.stringify(doc, null, 2)}\n`);
}

const WRONG_VERSIONS: unknown[] = [0, 2, 3, 99, 65536, -1, "1", 1.5, null, undefined, [1], { v: 1 }];

export async function wrongVersion(copy: string, random: Random): Promise<AppliedDamage> {
  const doc = await readManifest(copy);
  const version = WRONG_VERSIONS[int(random, WRONG_VERSIONS.length)];
  if (version === undefined) delete doc.formatVersion;
  else doc.formatVersion = version;
  const reseal = random() < 0.7;
  await writeManifest(copy, doc, reseal);
  return {
    kind: reseal ? "version:resealed" : "version",
    detail: `formatVersion ${JSON.stringify(version) ?? "absent"}`,
    names: ["manifest.json"],
    rawContent: false,
    touched: ["manifest.json"],
  };
}

type Edit = (doc: ManifestDoc, random: Random, vms: [string, string]) => string;

function vmEntry(doc: ManifestDoc, random: Random): Record<string, unknown> & { name: string } {
  return pick(random, doc.vms) as Record<string, unknown> & { name: string };
}

/**
 * Edits that leave valid JSON and a snapshot that no longer describes its own files (a forgery
 * that is consistent with itself cannot be told apart: the checksum has no key).
 */
const EDITS: Edit[] = [
  (doc, random) => {
    const entry = pick(random, doc.files);
    entry.size = Number(entry.size) + 1 + int(random, 100);
    return `files: ${String(entry.path)} size`;
  },
  (doc, random) => {
    const entry = pick(random, doc.files);
    entry.sha256 = createHash("sha256").update(String(random())).digest("hex");
    return `files: ${String(entry.path)} sha256`;
  },
  (doc, random, [a, b]) => {
    const vm = vmEntry(doc, random);
    const field = pick(random, ["deviceState", "configuration", "ramStart"]);
    const other = vm.name === a ? b : a;
    vm[field] = String(vm[field]).replace(`vms/${vm.name}/`, `vms/${other}/`);
    return `VM ${vm.name} ${field} -> VM ${other}'s`;
  },
  (doc, random, [a, b]) => {
    const vm = vmEntry(doc, random);
    const other = vm.name === a ? b : a;
    const extra = vm.extraFiles as { file: string }[];
    const workingSet = vm.workingSet as { file: string };
    const target = extra[0] !== undefined && random() < 0.5 ? extra[0] : workingSet;
    target.file = target.file.replace(`vms/${vm.name}/`, `vms/${other}/`);
    return `VM ${vm.name} ${target === workingSet ? "working set" : "disk"} -> VM ${other}'s`;
  },
  (doc, random, [a, b]) => {
    const vm = vmEntry(doc, random);
    const other = vm.name === a ? b : a;
    const block = pick(random, vm.blocks as Record<string, string>[]);
    block.file = String(block.file).replace(`vms/${vm.name}/`, `vms/${other}/`);
    block.index = String(block.index).replace(`vms/${vm.name}/`, `vms/${other}/`);
    return `VM ${vm.name} block ${block.id} -> VM ${other}'s`;
  },
  (doc) => {
    const [first, second] = doc.vms;
    if (first === undefined || second === undefined) return "none";
    const name = first.name;
    first.name = second.name;
    second.name = name;
    return "VM names exchanged";
  },
  (doc, random) => {
    const vm = vmEntry(doc, random);
    const block = pick(random, vm.blocks as Record<string, number>[]);
    const field = pick(random, ["presentPages", "pages", "usedLength"]);
    block[field] = Math.max(0, (block[field] ?? 0) + (random() < 0.5 ? -1 : 1) * (1 + int(random, 4)));
    return `VM ${vm.name} block ${String(block.id)} ${field}`;
  },
  (doc, random) => {
    const vm = vmEntry(doc, random);
    const block = pick(random, vm.blocks as Record<string, string>[]);
    block.id = `${String(block.id)}x`;
    return `VM ${vm.name} block id renamed`;
  },
  (doc, random) => {
    const vm = vmEntry(doc, random);
    const workingSet = vm.workingSet as { pages: number };
    workingSet.pages += 1;
    return `VM ${vm.name} working set pages`;
  },
  (doc) => {
    const inflight = doc.inflight as { frames: number };
    inflight.frames += 1;
    return "inflight frames";
  },
  (doc, random) => {
    const spec = doc.spec as { vms: { name: string; memoryMiB: number }[] };
    const vm = pick(random, spec.vms);
    vm.memoryMiB = pick(random, [64, 256, 512]);
    return `spec: VM ${vm.name} memoryMiB ${vm.memoryMiB}`;
  },
  (doc, random) => {
    const spec = doc.spec as { vms: { name: string }[] };
    const vm = pick(random, spec.vms);
    vm.name = `${vm.name}z`;
    return `spec: VM ${vm.name} renamed`;
  },
  (doc, random) => {
    doc.vms.splice(int(random, doc.vms.length), 1);
    return "a VM removed from vms";
  },
  (doc, random) => {
    const vm = vmEntry(doc, random);
    vm.ramBytes = Number(vm.ramBytes) + 4096;
    return `VM ${vm.name} ramBytes`;
  },
  (doc) => {
    doc.name = "other";
    return "name";
  },
  (doc, random) => {
    const vm = vmEntry(doc, random);
    vm.blocks = [];
    vm.ramBytes = 0;
    return `VM ${vm.name} without memory`;
  },
];

export async function editManifest(
  pristine: Pristine,
  copy: string,
  random: Random,
): Promise<AppliedDamage | null> {
  const doc = await readManifest(copy);
  const [a, b] = pristine.vms;
  if (a === undefined || b === undefined) throw new Error("two VMs needed");
  const before = JSON.stringify(doc);
  const what = pick(random, EDITS)(doc, random, [a, b]);
  if (JSON.stringify(doc) === before) return null;
  const reseal = random() < 0.75;
  await writeManifest(copy, doc, reseal);
  return {
    kind: reseal ? "manifest-edit:resealed" : "manifest-edit",
    detail: what,
    // the manifest, or the file or VM it no longer matches ("... differs from the manifest")
    names: [
      "manifest",
      `VM ${a}`,
      `VM ${b}`,
      `vms/${a}/`,
      `vms/${b}/`,
      ...pristine.files.filter((file) => what.includes(file)),
    ],
    rawContent: false,
    touched: ["manifest.json"],
  };
}
