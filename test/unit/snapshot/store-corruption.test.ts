import assert from "node:assert/strict";
import { lstat, mkdir, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { after, before, describe, it } from "node:test";
import { SnapshotStore, type SnapshotReader } from "../../../src/snapshot/store/index.ts";
import { encodeManifest, type ManifestBody } from "../../../src/snapshot/store/manifest.ts";
import { HrError } from "../../../src/util/errors.ts";
import { Rng, TempDirs, writeRandomVm, type Expected } from "./store-fixture.ts";

/**
 * Damages a committed snapshot in ~200 random ways, one at a time (undone after each), and
 * checks that every one is refused with an HrError naming the damaged file: by `open()`, or by
 * `verify()`, and that nothing read through an opened reader is ever wrong data.
 */

const dirs = new TempDirs();
after(() => dirs.removeAll());

const NAME = "base";
const DAMAGES = 200;

interface Damage {
  kind: string;
  /** Files whose naming proves the damage was found (any of them). */
  files: string[];
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)));
}

function manifestEdit(original: Buffer, edit: (manifest: Record<string, unknown>) => void): Buffer {
  const { checksum: _checksum, ...body } = JSON.parse(original.toString()) as Record<string, unknown>;
  edit(body);
  return encodeManifest(body as unknown as ManifestBody);
}

describe("snapshot store corruption", () => {
  let store: SnapshotStore;
  let dir: string;
  let expected: Expected;
  const originals = new Map<string, Buffer>();

  before(async () => {
    store = new SnapshotStore(await dirs.make(), { stagingPages: 16 });
    const rng = new Rng(4242);
    expected = new Map();
    const builder = await store.begin(NAME);
    const blocks = [
      { id: "pc.ram", usedLength: 300 * 4096 },
      { id: "0000:00:02.0/vga.vram", usedLength: 16 * 4096 },
      { id: "/rom@etc/acpi/tables", usedLength: 2 * 4096 },
    ];
    await writeRandomVm(builder, "alpha", blocks, rng, expected);
    await writeRandomVm(builder, "beta", blocks, rng, expected);
    await builder.addVmFile("beta", "disk.qcow2", (destination) => writeFile(destination, rng.bytes(3000)));
    builder.setTraffic({ edges: [{ from: "alpha", to: "beta", bytes: 99 }] });
    builder.setInflight([{ to: "beta", from: "alpha", data: Buffer.from("in flight") }]);
    await builder.commit();
    dir = store.pathOf(NAME);
    for (const file of await listFiles(dir)) originals.set(file, await readFile(join(dir, file)));
  });

  /** Puts back the original bytes of the files a damage touched. */
  async function restore(touched: readonly string[]): Promise<void> {
    for (const file of touched) {
      const path = join(dir, file);
      const stats = await lstat(path).catch(() => undefined);
      if (stats !== undefined && !stats.isFile()) await rm(path, { recursive: true });
      await writeFile(path, originals.get(file) ?? Buffer.alloc(0));
    }
  }

  async function applyDamage(rng: Rng): Promise<Damage> {
    const files = [...originals.keys()].sort();
    const file = files[rng.below(files.length)] ?? "manifest.json";
    const path = join(dir, file);
    const bytes = originals.get(file) ?? Buffer.alloc(0);
    const kind = rng.below(12);
    if (kind <= 3 && bytes.length > 0) {
      const flipped = Buffer.from(bytes);
      const bit = rng.below(bytes.length * 8);
      flipped[bit >> 3] = (flipped[bit >> 3] ?? 0) ^ (1 << (bit & 7));
      await writeFile(path, flipped);
      return { kind: `flip bit ${bit}`, files: [file] };
    }
    if (kind === 4 && bytes.length > 0) {
      const length = rng.below(bytes.length);
      await writeFile(path, bytes.subarray(0, length));
      return { kind: `truncate to ${length}`, files: [file] };
    }
    if (kind === 5) {
      await rm(path);
      return { kind: "delete", files: [file] };
    }
    if (kind === 6) {
      await writeFile(path, Buffer.concat([bytes, rng.bytes(1 + rng.below(16))]));
      return { kind: "append", files: [file] };
    }
    if (kind === 7 && file.startsWith("vms/")) {
      const twin = file.startsWith("vms/alpha/")
        ? file.replace("vms/alpha/", "vms/beta/")
        : file.replace("vms/beta/", "vms/alpha/");
      const other = originals.get(twin);
      if (other !== undefined && !other.equals(bytes)) {
        await writeFile(path, other);
        await writeFile(join(dir, twin), bytes);
        return { kind: "swap between VMs", files: [file, twin] };
      }
    }
    if (kind === 8 && file.endsWith(".bin")) {
      await rm(path);
      await (rng.below(2) === 0 ? mkdir(path) : symlink(join(dir, "manifest.json"), path));
      return { kind: "not a regular file", files: [file] };
    }
    const manifest = originals.get("manifest.json") ?? Buffer.alloc(0);
    const manifestPath = join(dir, "manifest.json");
    if (kind === 9) {
      await writeFile(
        manifestPath,
        manifestEdit(manifest, (body) => (body.formatVersion = 2)),
      );
      return { kind: "manifest format version 2", files: ["manifest.json"] };
    }
    if (kind === 10) {
      const text = manifest.toString();
      const edited = text.replace(
        /"ramBytes": (\d+)/,
        (_, value: string) => `"ramBytes": ${Number(value) + 4096}`,
      );
      await writeFile(manifestPath, edited.replace('"pauseMs": null', '"pauseMs": 1'));
      return { kind: "manifest field changed", files: ["manifest.json"] };
    }
    // A manifest that lies consistently (checksum recomputed): the files must still disagree with it.
    const lies = ["size", "sha256", "presentPages"] as const;
    const lie = lies[rng.below(lies.length)] ?? "size";
    const target = rng.below(5);
    let named = "manifest.json";
    const edited = manifestEdit(manifest, (body) => {
      const entries = body.files as { path: string; size: number; sha256: string }[];
      const entry = entries[target];
      if (entry === undefined) return;
      if (lie === "size") entry.size += 1;
      if (lie === "sha256") entry.sha256 = entry.sha256.replace(/^./, (c) => (c === "0" ? "1" : "0"));
      named = entry.path;
      if (lie === "presentPages") {
        const vms = body.vms as { blocks: { presentPages: number; pages: number; index: string }[] }[];
        const block = vms[0]?.blocks[0];
        if (block !== undefined) {
          block.presentPages = (block.presentPages + 1) % (block.pages + 1);
          named = block.index;
        }
      }
    });
    await writeFile(manifestPath, edited);
    return { kind: `manifest lies about ${lie}`, files: [named, "manifest.json"] };
  }

  /** Reads everything through the reader; every value must be right, every failure an HrError. */
  async function readAll(reader: SnapshotReader): Promise<void> {
    const attempt = async (what: string, read: () => Promise<unknown>): Promise<void> => {
      try {
        await read();
      } catch (error) {
        assert.ok(error instanceof HrError, `${what}: ${String(error)}`);
      }
    };
    for (const vm of reader.vmNames()) {
      await attempt("device", () => reader.deviceState(vm));
      await attempt("working set", () => reader.workingSet(vm));
      await attempt("memory", async () => {
        const memory = await reader.memory(vm);
        for (const block of reader.vm(vm).blocks) {
          const written = expected.get(`${vm}|${block.id}`);
          const want = (page: number): Buffer => written?.get(page) ?? Buffer.alloc(4096);
          // First, as the page server does for a requested page: a chunk that passes the check
          // on the spot is read later without one, so a wrong pass shows as wrong data.
          for (let page = 0; page < block.pages; page += 1 + (page % 37)) {
            await attempt("page checked on the spot", async () => {
              memory.checkChunkSync(block.id, page);
              assert.deepEqual(await memory.readPage(block.id, page), want(page));
            });
          }
          await attempt("pages", async () => {
            for await (const { page, data } of memory.pages(block.id)) assert.deepEqual(data, want(page));
          });
          for (let page = 0; page < block.pages; page += 1 + (page % 37)) {
            await attempt("page", async () =>
              assert.deepEqual(await memory.readPage(block.id, page), want(page)),
            );
          }
        }
      });
    }
    await attempt("disk", () => reader.verifyVmFile("beta", "disk.qcow2"));
    await attempt("inflight", () => reader.inflight());
    await attempt("traffic", () => reader.traffic());
  }

  it("verify() reports an undamaged snapshot clean", async () => {
    const report = await store.verify(NAME);
    assert.deepEqual(report.damages, []);
    assert.equal(report.ok, true);
    const reader = await store.open(NAME);
    await readAll(reader);
    await reader.close();
  });

  it(`refuses each of ${DAMAGES} random damages with an HrError naming the file`, async () => {
    const rng = new Rng(1234567);
    const kinds = new Map<string, number>();
    for (let round = 0; round < DAMAGES; round++) {
      const damage = await applyDamage(rng);
      const what = `round ${round}: ${damage.kind} of ${damage.files.join(" / ")}`;
      const key = damage.kind.replace(/ \d+$/, "");
      kinds.set(key, (kinds.get(key) ?? 0) + 1);
      const names = (text: string): boolean => damage.files.some((file) => text.includes(`${NAME}/${file}`));
      let reader: SnapshotReader | undefined;
      try {
        reader = await store.open(NAME);
      } catch (error) {
        assert.ok(error instanceof HrError, `${what}: open threw ${String(error)}`);
        assert.ok(names(error.message), `${what}: open said ${error.message}`);
      }
      if (reader !== undefined) {
        const report = await store.verify(NAME);
        assert.equal(report.ok, false, `${what}: verify found nothing`);
        assert.ok(
          report.damages.some((found) => damage.files.includes(found.file)),
          `${what}: verify said ${JSON.stringify(report.damages)}`,
        );
        await readAll(reader);
        await reader.close();
      }
      await restore([...damage.files, "manifest.json"]);
    }
    assert.equal((await store.verify(NAME)).ok, true, "undamaged again after the last undo");
    assert.ok(kinds.size >= 8, JSON.stringify([...kinds]));
  });
});
