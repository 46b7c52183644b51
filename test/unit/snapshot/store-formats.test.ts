import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Bitmap } from "../../../src/snapshot/store/bitmap.ts";
import { CHUNK_PAGES } from "../../../src/snapshot/store/layout.ts";
import {
  decodeInflight,
  encodeInflight,
  type InflightFrame,
} from "../../../src/snapshot/store/inflight-file.ts";
import {
  decodeBlockFileName,
  encodeBlockFileName,
  isSafeRelativePath,
  resolveInside,
} from "../../../src/snapshot/store/layout.ts";
import {
  canonicalJson,
  decodeManifest,
  encodeManifest,
  type ManifestBody,
} from "../../../src/snapshot/store/manifest.ts";
import {
  decodeMemoryIndex,
  encodeMemoryIndex,
  indexFileSize,
  type MemoryIndex,
} from "../../../src/snapshot/store/memory-index.ts";
import { seal } from "../../../src/snapshot/store/sealed.ts";
import {
  decodeWorkingSet,
  decodeWorkingSetFile,
  encodeWorkingSet,
  WORKING_SET_VERSION,
} from "../../../src/snapshot/store/working-set-file.ts";
import { HrError } from "../../../src/util/errors.ts";
import { Rng } from "./store-fixture.ts";

type Decoder = (file: string, bytes: Buffer) => unknown;

function sampleIndex(): MemoryIndex {
  const present = new Bitmap(600);
  for (const page of [0, 1, 7, 255, 256, 599]) present.set(page);
  return { pageCount: 600, present, chunkSums: new Rng(3).bytes(Math.ceil(600 / CHUNK_PAGES) * 16) };
}

const FRAMES: InflightFrame[] = [
  { to: "db", from: "app", data: Buffer.from("hello") },
  { to: "app", from: "", data: Buffer.alloc(1514, 0xaa) },
];

const MANIFEST: ManifestBody = {
  formatVersion: 1,
  name: "snap",
  createdAt: "2024-06-01T12:00:00.000Z",
  pauseMs: 10,
  spec: { name: "lab", nested: { list: [1, "two", null, true] } },
  traffic: null,
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
    { path: "vms/db/files/disk.qcow2", size: 1 << 20, sha256: "f".repeat(64), scope: "file" },
  ],
};

/** Two pages of copies: distinct bytes, so a copy moved or cut shows. */
const COPIES = Buffer.concat([Buffer.alloc(4096, 0xa1), Buffer.alloc(4096, 0xb2)]);
COPIES.writeUInt32LE(0xdeadbeef, 4096 + 17);

/** `version`: the newest each decoder reads (one above is refused as unsupported). */
const CASES: { name: string; valid: Buffer; decode: Decoder; magic: string; version: number }[] = [
  {
    name: "memory index",
    valid: encodeMemoryIndex(sampleIndex()),
    decode: decodeMemoryIndex,
    magic: "HRMI",
    version: 1,
  },
  {
    name: "working set",
    valid: encodeWorkingSet([
      { block: 0, page: 9 },
      { block: 1, page: 0 },
    ]),
    decode: decodeWorkingSet,
    magic: "HRWS",
    version: WORKING_SET_VERSION,
  },
  {
    name: "working set with copies",
    valid: encodeWorkingSet(
      [
        { block: 0, page: 9 },
        { block: 1, page: 0 },
        { block: 1, page: 7 },
      ],
      COPIES,
    ),
    decode: decodeWorkingSetFile,
    magic: "HRWS",
    version: WORKING_SET_VERSION,
  },
  {
    name: "in-flight frames",
    valid: encodeInflight(FRAMES),
    decode: decodeInflight,
    magic: "HRIF",
    version: 1,
  },
  {
    name: "manifest",
    valid: encodeManifest(MANIFEST),
    decode: (file, bytes) => decodeManifest(file, bytes),
    magic: "",
    version: 1,
  },
];

function assertRefused(decode: Decoder, bytes: Buffer, what: string): HrError {
  try {
    decode("snap/file", bytes);
  } catch (error) {
    assert.ok(error instanceof HrError, `${what}: ${String(error)}`);
    assert.match(error.message, /^snap\/file: /, what);
    return error;
  }
  assert.fail(`${what}: accepted`);
}

describe("snapshot store file formats", () => {
  it("round-trips the memory index", () => {
    const index = sampleIndex();
    const decoded = decodeMemoryIndex("x", encodeMemoryIndex(index));
    assert.equal(decoded.pageCount, 600);
    assert.deepEqual(decoded.present.bytes, index.present.bytes);
    assert.deepEqual(decoded.chunkSums, index.chunkSums);
    assert.equal(encodeMemoryIndex(index).length, indexFileSize(600));
  });

  it("round-trips the working set and the in-flight frames", () => {
    assert.deepEqual(decodeWorkingSet("x", encodeWorkingSet([{ block: 3, page: 2 ** 32 - 1 }])), [
      { block: 3, page: 2 ** 32 - 1 },
    ]);
    assert.deepEqual(decodeWorkingSet("x", encodeWorkingSet([])), []);
    assert.deepEqual(decodeInflight("x", encodeInflight(FRAMES)), FRAMES);
  });

  it("writes a working set without copies as version 1 and one with copies as version 2", () => {
    const slots = [
      { block: 0, page: 9 },
      { block: 1, page: 0 },
      { block: 1, page: 7 },
    ];
    const plain = encodeWorkingSet(slots);
    assert.equal(plain.readUInt16LE(4), 1);
    assert.deepEqual(decodeWorkingSetFile("x", plain), { slots, copies: Buffer.alloc(0) });
    const copied = encodeWorkingSet(slots, COPIES);
    assert.equal(copied.readUInt16LE(4), 2);
    const decoded = decodeWorkingSetFile("x", copied);
    assert.deepEqual(decoded.slots, slots);
    assert.ok(decoded.copies.equals(COPIES));
    assert.deepEqual(decodeWorkingSet("x", copied), slots);
    // More copies than entries, or a partial page, cannot be written.
    assert.throws(() => encodeWorkingSet(slots.slice(0, 1), COPIES), /working set copies/);
    assert.throws(() => encodeWorkingSet(slots, COPIES.subarray(0, 5000)), /working set copies/);
  });

  it("skips only the envelope's hash when the caller matched the bytes to the manifest", () => {
    const slots = [{ block: 0, page: 1 }];
    const file = encodeWorkingSet(slots, COPIES.subarray(0, 4096));
    const stale = Buffer.from(file);
    stale[stale.length - 1] = (stale[stale.length - 1] ?? 0) ^ 1;
    assert.equal(assertRefused(decodeWorkingSetFile, stale, "stale envelope hash").code, "SNAPSHOT_CORRUPT");
    assert.deepEqual(decodeWorkingSetFile("x", stale, true).slots, slots);
    const badMagic = Buffer.from(stale);
    badMagic[0] = 0x58;
    const verified: Decoder = (name, bytes) => decodeWorkingSetFile(name, bytes, true);
    assert.equal(assertRefused(verified, badMagic, "bad magic").code, "SNAPSHOT_CORRUPT");
    assert.equal(assertRefused(verified, stale.subarray(0, 60), "cut").code, "SNAPSHOT_CORRUPT");
  });

  it("refuses a version-2 working set whose copy count does not match its bytes", () => {
    const slots = [
      { block: 0, page: 1 },
      { block: 0, page: 2 },
    ];
    const body = encodeWorkingSet(slots, COPIES).subarray(8, -32);
    const countAt = 4 + slots.length * 6;
    for (const count of [0, 1, 3]) {
      const edited = Buffer.from(body);
      edited.writeUInt32LE(count, countAt);
      const error = assertRefused(decodeWorkingSetFile, seal("HRWS", 2, edited), `copy count ${count}`);
      assert.equal(error.code, "SNAPSHOT_CORRUPT");
    }
    // a version-1 body with copies appended is not version 1
    assert.equal(
      assertRefused(decodeWorkingSetFile, seal("HRWS", 1, body), "v1 with copies").code,
      "SNAPSHOT_CORRUPT",
    );
  });

  it("round-trips the manifest; key order is free, every other byte is checked", () => {
    const decoded = decodeManifest("x", encodeManifest(MANIFEST), "snap");
    const { checksum, ...body } = decoded;
    assert.deepEqual(body, MANIFEST);
    assert.match(checksum, /^sha256:[0-9a-f]{64}$/);
    assert.equal(canonicalJson({ b: 1, a: [{ d: 2, c: 3 }] }), '{"a":[{"c":3,"d":2}],"b":1}');
    const reordered = JSON.parse(encodeManifest(MANIFEST).toString()) as Record<string, unknown>;
    const shuffled = Object.fromEntries(Object.entries(reordered).reverse());
    assert.doesNotThrow(() => decodeManifest("x", Buffer.from(`${JSON.stringify(shuffled, null, 2)}\n`)));
    const compact = assertRefused(decodeManifest, Buffer.from(JSON.stringify(reordered)), "compact");
    assert.match(compact.message, /changed bytes/);
    assertRefused(
      (file, bytes) => decodeManifest(file, bytes, "other"),
      encodeManifest(MANIFEST),
      "wrong dir",
    );
  });

  it("refuses a newer format version with a hint to upgrade", () => {
    const newer = encodeManifest({ ...MANIFEST, formatVersion: 2 } as unknown as ManifestBody);
    assert.equal(assertRefused(decodeManifest, newer, "manifest v2").code, "SNAPSHOT_VERSION_UNSUPPORTED");
    const edited = Buffer.from(
      encodeManifest(MANIFEST).toString().replace('"formatVersion": 1', '"formatVersion": 3'),
    );
    const error = assertRefused(decodeManifest, edited, "edited version");
    assert.equal(error.code, "SNAPSHOT_CORRUPT");
    assert.match(error.message, /claims format version 3/);
    for (const { valid, decode, magic, name, version } of CASES.filter((item) => item.magic !== "")) {
      const body = valid.subarray(8, valid.length - 32);
      const newer = seal(magic, version + 1, body);
      assert.equal(assertRefused(decode, newer, name).code, "SNAPSHOT_VERSION_UNSUPPORTED");
    }
  });

  for (const { name, valid, decode } of CASES) {
    it(`${name}: refuses every truncation, every single-bit flip and random garbage`, () => {
      for (let length = 0; length < valid.length; length++) {
        assertRefused(decode, valid.subarray(0, length), `${name} cut at ${length}`);
      }
      for (let bit = 0; bit < valid.length * 8; bit++) {
        const flipped = Buffer.from(valid);
        flipped[bit >> 3] = (flipped[bit >> 3] ?? 0) ^ (1 << (bit & 7));
        assertRefused(decode, flipped, `${name} bit ${bit}`);
      }
      const rng = new Rng(77);
      for (let round = 0; round < 300; round++) {
        assertRefused(decode, rng.bytes(rng.below(400)), `${name} garbage ${round}`);
        assertRefused(
          decode,
          Buffer.concat([valid, rng.bytes(1 + rng.below(8))]),
          `${name} extended ${round}`,
        );
      }
    });
  }

  it("binary readers given a valid envelope around random bodies throw only HrError", () => {
    const rng = new Rng(99);
    for (const { valid, decode, magic, name } of CASES.filter((item) => item.magic !== "")) {
      const body = valid.subarray(8, valid.length - 32);
      for (let round = 0; round < 1000; round++) {
        let mutated: Buffer;
        if (round % 2 === 0) {
          mutated = rng.bytes(rng.below(64));
        } else {
          mutated = Buffer.from(body);
          for (let edits = 1 + rng.below(4); edits > 0 && mutated.length > 0; edits--) {
            mutated[rng.below(mutated.length)] = rng.below(256);
          }
          if (rng.below(3) === 0) mutated = mutated.subarray(0, rng.below(mutated.length + 1));
        }
        try {
          decode("snap/file", seal(magic, 1, mutated));
        } catch (error) {
          assert.ok(error instanceof HrError, `${name} round ${round}: ${String(error)}`);
        }
      }
    }
  });

  it("refuses a manifest nested deeper than the stack allows as damage, not a crash", () => {
    const deep = Buffer.from(`{"spec": ${"[".repeat(200_000)}${"]".repeat(200_000)}}`);
    assertRefused(decodeManifest, deep, "deep");
  });

  it("maps block ids to file names reversibly and safely", () => {
    const ids = [
      "pc.ram",
      "0000:00:02.0/vga.vram",
      "/rom@etc/acpi/tables",
      ".",
      "..",
      "a b%c",
      "ünï",
      "x".repeat(70),
    ];
    for (const id of ids) {
      const stem = encodeBlockFileName(id, () => "h");
      assert.ok(isSafeRelativePath(`ram/${stem}.raw`), stem);
      assert.ok(!stem.includes("/") && !stem.startsWith("."), stem);
      assert.equal(decodeBlockFileName(stem), id);
    }
    assert.equal(
      encodeBlockFileName("/".repeat(100), () => "hash"),
      "~hash",
    );
    assert.equal(decodeBlockFileName("~hash"), undefined);
    for (const bad of ["", ".", "..", "a/b", "%2", "%zz", "%2f", ".hidden", "a%2Fb/"]) {
      assert.equal(decodeBlockFileName(bad), undefined, bad);
    }
    assert.throws(() => encodeBlockFileName("", () => "h"), HrError);
  });

  it("refuses manifest paths that would leave the snapshot directory", () => {
    for (const path of ["../x", "/etc/passwd", "vms/../../x", "a//b", "./a", "a/.", "", "a\\b", "vms/a/"]) {
      assert.equal(isSafeRelativePath(path), false, path);
      assert.throws(() => resolveInside("/store/snap", path), { code: "SNAPSHOT_CORRUPT" });
    }
    assert.equal(resolveInside("/store/snap", "vms/a/ram/pc.ram.raw"), "/store/snap/vms/a/ram/pc.ram.raw");
  });
});
