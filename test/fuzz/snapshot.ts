/**
 * Fuzz targets of the snapshot store's file readers (src/snapshot/store): the sealed binary files
 * (memory index, working set, in-flight frames), the manifest, and the manifest's paths.
 *
 * A sealed file whose bytes are mutated almost always fails its checksum, which tests little
 * beyond the envelope. So most inputs are mutated bodies sealed again with a correct checksum
 * (reaching the body parsers), some are whole files mutated as they are (reaching the envelope
 * checks), and some keep a valid body under another version or magic. Likewise most manifests
 * are edited as JSON and encoded again with a correct checksum, so zod and the cross checks see
 * them, and some are mutated as bytes.
 */
import { sep } from "node:path";
import fc from "fast-check";
import { Bitmap } from "../../src/snapshot/store/bitmap.ts";
import {
  decodeInflight,
  encodeInflight,
  type InflightFrame,
} from "../../src/snapshot/store/inflight-file.ts";
import { resolveInside } from "../../src/snapshot/store/layout.ts";
import { decodeManifest, encodeManifest, type ManifestBody } from "../../src/snapshot/store/manifest.ts";
import {
  chunkCount,
  CHUNK_SUM_BYTES,
  decodeMemoryIndex,
  encodeMemoryIndex,
  indexFileSize,
} from "../../src/snapshot/store/memory-index.ts";
import { CHECKSUM_BYTES, HEADER_BYTES, seal } from "../../src/snapshot/store/sealed.ts";
import {
  checkWorkingSet,
  decodeWorkingSet,
  decodeWorkingSetFile,
  encodeWorkingSet,
  type WorkingSetSlot,
} from "../../src/snapshot/store/working-set-file.ts";
import { check, defineTarget, OK, typedOutcome, type FuzzTarget, type Outcome } from "./harness.ts";
import { fuzzBytes, le, randomBytes, withHugeLengths, type LengthField, type Seed } from "./mutate.ts";

const STORE_RULE = {
  codes: ["SNAPSHOT_CORRUPT", "SNAPSHOT_VERSION_UNSUPPORTED"],
  // decodeManifest turns any other exception into "cannot be read: ..." (documented for JSON
  // nested deeper than the stack allows; anything else is a bug behind the catch-all).
  maskedCrash: /cannot be read: (?!Maximum call stack)/,
};
const FILE = "snap/file";

interface SealedFormat {
  magic: string;
  version: number;
  /** Valid bodies with their length fields. */
  bodies: Seed[];
}

function bodyOf(file: Buffer): Buffer {
  return file.subarray(HEADER_BYTES, file.length - CHECKSUM_BYTES);
}

/** Valid bodies with every (or a few) length fields huge, sealed with a correct checksum. */
function hugeSealed(format: SealedFormat): fc.Arbitrary<Buffer> {
  return withHugeLengths(format.bodies).map((body) => seal(format.magic, format.version, body));
}

/** Inputs for a sealed file: resealed mutated bodies, whole files mutated, other versions. */
function sealedInputs(format: SealedFormat): fc.Arbitrary<Buffer> {
  const files: Seed[] = format.bodies.map((body) => ({
    bytes: seal(format.magic, format.version, body.bytes),
    fields: [le(4, 2), le(6, 2), ...body.fields.map((field) => ({ ...field, at: field.at + HEADER_BYTES }))],
  }));
  return fc.oneof(
    {
      weight: 6,
      arbitrary: fuzzBytes(format.bodies).map((body) => seal(format.magic, format.version, body)),
    },
    { weight: 3, arbitrary: fuzzBytes(files, 128) },
    {
      weight: 1,
      arbitrary: fc
        .record({
          body: fc.nat(format.bodies.length - 1),
          magic: fc.constantFrom(format.magic, "HRMI", "HRWS", "HRIF", "\u0000\u0000\u0000\u0000"),
          version: fc.constantFrom(0, 1, 2, 0xffff),
        })
        .map(({ body, magic, version }) => seal(magic, version, format.bodies[body]!.bytes)),
    },
  );
}

function decoded(work: () => void): Outcome {
  try {
    work();
    return OK;
  } catch (error) {
    return typedOutcome(error, STORE_RULE);
  }
}

function indexSeed(pageCount: number, presentPages: readonly number[]): Seed {
  const present = new Bitmap(pageCount);
  for (const page of presentPages) present.set(page);
  const chunkSums = Buffer.alloc(chunkCount(pageCount) * CHUNK_SUM_BYTES, 0x3c);
  const file = encodeMemoryIndex({ pageCount, present, chunkSums });
  return { bytes: bodyOf(file), fields: [le(0, 4), le(4, 4), le(8, 4), le(12, 4)] };
}

const INDEX: SealedFormat = {
  magic: "HRMI",
  version: 1,
  bodies: [
    indexSeed(600, [0, 1, 7, 255, 256, 599]),
    indexSeed(0, []),
    indexSeed(1, [0]),
    indexSeed(256, [3]),
    indexSeed(257, [256]),
  ],
};

function workingSetSeed(slots: readonly WorkingSetSlot[]): Seed {
  return { bytes: bodyOf(encodeWorkingSet(slots)), fields: [le(0, 4)] };
}

const WORKING_SET: SealedFormat = {
  magic: "HRWS",
  version: 1,
  bodies: [
    workingSetSeed([
      { block: 0, page: 9 },
      { block: 1, page: 0 },
      { block: 0, page: 15 },
    ]),
    workingSetSeed([]),
    workingSetSeed([{ block: 1, page: 1 }]),
  ],
};
/** Version 2: the same entries followed by a copy count and that many 4 KiB page copies. */
function workingSetCopiesSeed(slots: readonly WorkingSetSlot[], copied: number): Seed {
  const copies = Buffer.alloc(copied * 4096, 0x5a);
  return { bytes: bodyOf(encodeWorkingSet(slots, copies)), fields: [le(0, 4), le(4 + slots.length * 6, 4)] };
}

const WORKING_SET_COPIES: SealedFormat = {
  magic: "HRWS",
  version: 2,
  bodies: [
    workingSetCopiesSeed(
      [
        { block: 0, page: 9 },
        { block: 1, page: 0 },
      ],
      1,
    ),
    workingSetCopiesSeed([{ block: 1, page: 1 }], 1),
  ],
};

/** Page counts of the blocks a decoded working set is checked against. */
const WORKING_SET_BLOCKS = [16, 2];

function inflightSeed(frames: readonly InflightFrame[]): Seed {
  const fields: LengthField[] = [le(0, 4)];
  let at = 4;
  for (const frame of frames) {
    fields.push({ at, width: 1, littleEndian: true });
    at += 1 + Buffer.byteLength(frame.to);
    fields.push({ at, width: 1, littleEndian: true });
    at += 1 + Buffer.byteLength(frame.from);
    fields.push(le(at, 4));
    at += 4 + frame.data.length;
  }
  return { bytes: bodyOf(encodeInflight(frames)), fields };
}

const INFLIGHT: SealedFormat = {
  magic: "HRIF",
  version: 1,
  bodies: [
    inflightSeed([
      { to: "db", from: "app", data: Buffer.from("hello") },
      { to: "app", from: "", data: Buffer.alloc(100, 0xaa) },
      { to: "cache-ü", from: "db", data: Buffer.alloc(1, 1) },
    ]),
    inflightSeed([]),
  ],
};

const MANIFEST: ManifestBody = {
  formatVersion: 1,
  name: "snap",
  createdAt: "2024-06-01T12:00:00.000Z",
  pauseMs: 10,
  spec: { name: "lab", nested: { list: [1, "two", null, true] } },
  traffic: "traffic.json",
  inflight: { file: "inflight.bin", frames: 0 },
  vms: [
    {
      name: "db",
      ramBytes: 8192,
      pauseMs: null,
      machine: null,
      blocks: [
        {
          id: "pc.ram",
          usedLength: 8192,
          pages: 2,
          presentPages: 1,
          file: "vms/db/ram/pc.ram.raw",
          index: "vms/db/ram/pc.ram.idx",
        },
      ],
      deviceState: "vms/db/device.bin",
      configuration: "vms/db/config.bin",
      ramStart: "vms/db/ramstart.bin",
      workingSet: { file: "vms/db/workingset.bin", pages: 0, generation: 0 },
      extraFiles: [{ name: "disk.qcow2", file: "vms/db/files/disk.qcow2" }],
    },
  ],
  files: [
    { path: "vms/db/ram/pc.ram.raw", size: 8192, sha256: "a".repeat(64), scope: "chunks" },
    { path: "vms/db/ram/pc.ram.idx", size: indexFileSize(2), sha256: "b".repeat(64), scope: "file" },
    { path: "vms/db/device.bin", size: 1, sha256: "c".repeat(64), scope: "file" },
    { path: "vms/db/config.bin", size: 0, sha256: "c".repeat(64), scope: "file" },
    { path: "vms/db/ramstart.bin", size: 0, sha256: "c".repeat(64), scope: "file" },
    { path: "vms/db/workingset.bin", size: 46, sha256: "d".repeat(64), scope: "file" },
    { path: "inflight.bin", size: 44, sha256: "e".repeat(64), scope: "file" },
    { path: "traffic.json", size: 2, sha256: "e".repeat(64), scope: "file" },
    { path: "vms/db/files/disk.qcow2", size: 1 << 20, sha256: "f".repeat(64), scope: "file" },
  ],
};

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonPath = (string | number)[];

function pathsOf(value: Json, prefix: JsonPath = []): JsonPath[] {
  const paths: JsonPath[] = [prefix];
  if (Array.isArray(value)) value.forEach((item, i) => paths.push(...pathsOf(item, [...prefix, i])));
  else if (value !== null && typeof value === "object") {
    for (const [key, item] of Object.entries(value)) paths.push(...pathsOf(item, [...prefix, key]));
  }
  return paths;
}

/** Values a field might be damaged into: near-miss numbers and strings, and any JSON. */
const jsonReplacement: fc.Arbitrary<Json> = fc.oneof(
  fc.constantFrom<Json>(
    -1,
    0,
    1,
    1.5,
    2 ** 32,
    2 ** 53,
    1e308,
    "",
    "..",
    "../x",
    "/etc/passwd",
    "vms/db/../../x",
    "a".repeat(300),
    "sha256:" + "0".repeat(64),
    "2024-06-01T12:00:00Z",
    null,
    true,
    [],
    {},
  ),
  fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>,
  fc.string({ maxLength: 20 }),
);

type JsonEdit = { path: number; kind: "replace" | "delete" | "add" | "duplicate"; key: string; value: Json };

const jsonEdit: fc.Arbitrary<JsonEdit> = fc.record({
  path: fc.nat(),
  kind: fc.constantFrom("replace" as const, "delete" as const, "add" as const, "duplicate" as const),
  key: fc.constantFrom("extra", "name", "size", "file", "__proto__", "constructor"),
  value: jsonReplacement,
});

function applyEdit(root: Json, edit: JsonEdit): void {
  // A copy: the arbitrary's constants are shared between runs, and a later edit may change it.
  const value = structuredClone(edit.value);
  const paths = pathsOf(root).filter((path) => path.length > 0);
  const path = paths[edit.path % paths.length]!;
  let parent = root as Record<string | number, Json>;
  for (const step of path.slice(0, -1)) parent = parent[step] as Record<string | number, Json>;
  const last = path[path.length - 1]!;
  const target = parent[last];
  switch (edit.kind) {
    case "replace":
      parent[last] = value;
      return;
    case "delete":
      if (Array.isArray(parent)) parent.splice(Number(last), 1);
      else delete parent[last];
      return;
    case "add":
      if (Array.isArray(target)) target.push(value);
      else if (target !== null && typeof target === "object") {
        Object.defineProperty(target, edit.key, {
          value,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      } else parent[last] = value;
      return;
    case "duplicate":
      if (Array.isArray(parent)) parent.push(structuredClone(target));
      return;
  }
}

const manifestBytes: fc.Arbitrary<Buffer> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.array(jsonEdit, { minLength: 1, maxLength: 4 }).map((edits) => {
      const body = structuredClone(MANIFEST) as unknown as Json;
      for (const edit of edits) applyEdit(body, edit);
      return encodeManifest(body as unknown as ManifestBody);
    }),
  },
  { weight: 3, arbitrary: fuzzBytes([{ bytes: encodeManifest(MANIFEST), fields: [] }], 256) },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(0, 2, 99)
      .map((formatVersion) => encodeManifest({ ...MANIFEST, formatVersion } as unknown as ManifestBody)),
  },
);

const ROOT = `${sep}store${sep}snap`;

export const SNAPSHOT_TARGETS: FuzzTarget[] = [
  defineTarget({
    name: "store-memory-index",
    about: "decodeMemoryIndex: mutated ram/<block>.idx files (resealed bodies, raw bytes, other versions)",
    arbitrary: sealedInputs(INDEX),
    hugeLengths: hugeSealed(INDEX),
    run: (bytes: Buffer) =>
      decoded(() => {
        const index = decodeMemoryIndex(FILE, bytes);
        check(index.present.size === index.pageCount, "bitmap size is not the page count");
        check(index.chunkSums.length === chunkCount(index.pageCount) * CHUNK_SUM_BYTES, "chunk sums length");
        check(bytes.length === indexFileSize(index.pageCount), "accepted an index of the wrong size");
      }),
  }),
  defineTarget({
    name: "store-working-set",
    about: "decodeWorkingSet + checkWorkingSet: mutated workingset.bin files",
    arbitrary: sealedInputs(WORKING_SET),
    hugeLengths: hugeSealed(WORKING_SET),
    run: (bytes: Buffer) =>
      decoded(() => {
        const entries = decodeWorkingSet(FILE, bytes);
        check(entries.length * 6 + 4 + HEADER_BYTES + CHECKSUM_BYTES === bytes.length, "entry count vs size");
        checkWorkingSet(FILE, entries, WORKING_SET_BLOCKS);
      }),
  }),
  defineTarget({
    name: "store-working-set-copies",
    about: "decodeWorkingSetFile + checkWorkingSet: mutated version-2 workingset.bin files (page copies)",
    arbitrary: sealedInputs(WORKING_SET_COPIES),
    hugeLengths: hugeSealed(WORKING_SET_COPIES),
    run: (bytes: Buffer) =>
      decoded(() => {
        const { slots, copies } = decodeWorkingSetFile(FILE, bytes);
        check(copies.length % 4096 === 0 && copies.length / 4096 <= slots.length, "copies vs entries");
        const body = slots.length * 6 + 4 + (bytes.readUInt16LE(4) === 2 ? 4 + copies.length : 0);
        check(body + HEADER_BYTES + CHECKSUM_BYTES === bytes.length, "counts vs size");
        checkWorkingSet(FILE, slots, WORKING_SET_BLOCKS);
      }),
  }),
  defineTarget({
    name: "store-inflight",
    about: "decodeInflight: mutated inflight.bin files",
    arbitrary: sealedInputs(INFLIGHT),
    hugeLengths: hugeSealed(INFLIGHT),
    run: (bytes: Buffer) =>
      decoded(() => {
        const frames = decodeInflight(FILE, bytes);
        for (const frame of frames)
          check(frame.to.length > 0 && frame.data.length > 0, "empty name or frame");
      }),
  }),
  defineTarget({
    name: "store-manifest",
    about:
      "decodeManifest: manifests edited as JSON and re-encoded (valid checksum), mutated bytes, other versions",
    arbitrary: fc.record({ bytes: manifestBytes, dirName: fc.constantFrom(undefined, "snap", "other") }),
    run: ({ bytes, dirName }: { bytes: Buffer; dirName: string | undefined }) =>
      decoded(() => {
        const manifest = decodeManifest(FILE, bytes, dirName);
        for (const entry of manifest.files) resolveInside(ROOT, entry.path);
      }),
  }),
  defineTarget({
    name: "store-manifest-paths",
    about: "resolveInside: any string as a manifest path stays inside the snapshot or is SNAPSHOT_CORRUPT",
    arbitrary: fc.oneof(
      fc.string({ maxLength: 40 }),
      fc.string({ unit: "binary", maxLength: 40 }),
      fc
        .array(fc.constantFrom("vms", "db", "..", ".", "", "a%2F", "~x", "-", "ram", "/", "\\", "\u0000"), {
          maxLength: 6,
        })
        .map((parts) => parts.join("/")),
      randomBytes(40).map((bytes) => bytes.toString("latin1")),
    ),
    run: (path: string) =>
      decoded(() => {
        const resolved = resolveInside(ROOT, path);
        check(
          resolved.startsWith(ROOT + sep) && resolved !== ROOT + sep,
          `${JSON.stringify(path)} left the snapshot`,
        );
      }),
  }),
];
