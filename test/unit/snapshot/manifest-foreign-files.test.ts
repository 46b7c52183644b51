import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { encodeManifest, type ManifestBody } from "../../../src/snapshot/store/manifest.ts";
import { buildSmall, rejectsHr, TempDirs } from "./store-fixture.ts";

/**
 * Regressions found by the corruption campaign (test/integration/corruption.test.ts): manifests
 * edited with a recomputed checksum that the store accepted. Pointing VM alpha at beta's device
 * state, memory or disk restored alpha from beta's files; a VM dropped from `vms` left its files
 * listed and `snapshot verify` said ok while a restore refused it.
 */
const dirs = new TempDirs();
after(() => dirs.removeAll());

type Body = Record<string, unknown> & {
  vms: (Record<string, unknown> & { name: string; blocks: Record<string, string>[] })[];
};

async function resealed(edit: (body: Body) => void): Promise<{ dir: string; open: () => Promise<unknown> }> {
  const store = await dirs.store();
  await buildSmall(store, "s", 1);
  const path = join(store.pathOf("s"), "manifest.json");
  const { checksum: _checksum, ...body } = JSON.parse(await readFile(path, "utf8")) as Body;
  edit(body);
  await writeFile(path, encodeManifest(body as unknown as ManifestBody));
  return { dir: store.pathOf("s"), open: () => store.open("s") };
}

function alpha(body: Body): Body["vms"][number] {
  const vm = body.vms.find((entry) => entry.name === "alpha");
  assert.ok(vm);
  return vm;
}

describe("a resealed manifest pointing a VM at another VM's files is refused", () => {
  for (const field of ["deviceState", "configuration", "ramStart"]) {
    it(`alpha's ${field} -> beta's`, async () => {
      const snapshot = await resealed((body) => {
        const vm = alpha(body);
        vm[field] = String(vm[field]).replace("vms/alpha/", "vms/beta/");
      });
      const error = await rejectsHr(snapshot.open(), "SNAPSHOT_CORRUPT");
      assert.match(error.message, /s\/manifest\.json: VM alpha: vms\/beta\/\S+ lies outside vms\/alpha\//);
    });
  }

  it("alpha's memory block -> beta's raw image and index", async () => {
    const snapshot = await resealed((body) => {
      const block = alpha(body).blocks[0];
      assert.ok(block);
      block.file = String(block.file).replace("vms/alpha/", "vms/beta/");
      block.index = String(block.index).replace("vms/alpha/", "vms/beta/");
    });
    await rejectsHr(snapshot.open(), "SNAPSHOT_CORRUPT");
  });

  it("alpha's disk -> a file of beta's", async () => {
    const snapshot = await resealed((body) => {
      const extra = alpha(body).extraFiles as { file: string }[];
      assert.ok(extra[0]);
      extra[0].file = "vms/beta/device.bin";
    });
    const error = await rejectsHr(snapshot.open(), "SNAPSHOT_CORRUPT");
    assert.match(error.message, /lies outside vms\/alpha\//);
  });

  it("VM names exchanged", async () => {
    const snapshot = await resealed((body) => {
      const [first, second] = body.vms;
      assert.ok(first && second);
      [first.name, second.name] = [second.name, first.name];
    });
    await rejectsHr(snapshot.open(), "SNAPSHOT_CORRUPT");
  });
});

describe("a resealed manifest listing a file nothing references is refused", () => {
  it("a VM dropped from vms (its files still listed)", async () => {
    const snapshot = await resealed((body) => {
      body.vms = body.vms.filter((vm) => vm.name !== "beta");
    });
    const error = await rejectsHr(snapshot.open(), "SNAPSHOT_CORRUPT");
    assert.match(error.message, /vms\/beta\/\S+ is listed but belongs to nothing/);
  });
});
