import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { access, mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { SnapshotStore } from "../../../src/snapshot/store/index.ts";
import { buildSmall, rejectsHr, Rng, TempDirs } from "./store-fixture.ts";

const dirs = new TempDirs();
const mounts: string[] = [];
after(async () => {
  for (const mount of mounts) execFileSync("umount", [mount]);
  await dirs.removeAll();
});

const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const CHILD = fileURLToPath(new URL("./store-crash-child.ts", import.meta.url));

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function assertOnly(store: SnapshotStore, names: string[]): Promise<void> {
  const listed = (await store.list()).map((entry) =>
    entry.status === "ok" ? entry.summary.name : entry.name,
  );
  assert.deepEqual(listed.sort(), names.sort());
  for (const name of names) assert.equal((await store.verify(name)).ok, true, name);
}

describe("snapshot store atomicity", () => {
  it("an aborted snapshot leaves nothing, earlier snapshots intact", async () => {
    const store = await dirs.store();
    await buildSmall(store, "first", 1);
    const builder = await store.begin("second");
    const vm = await builder.vm("a", [{ id: "pc.ram", usedLength: 16 * 4096 }]);
    await vm.writePage("pc.ram", 0, Buffer.alloc(4096, 9));
    await builder.abort();
    await builder.abort();
    assert.equal(await exists(builder.tempDir), false);
    await rejectsHr(builder.commit(), "SNAPSHOT_CLOSED");
    await rejectsHr(vm.writePage("pc.ram", 0, "zero"), "SNAPSHOT_CLOSED");
    await rejectsHr(vm.setDeviceState(Buffer.alloc(1)), "SNAPSHOT_CLOSED");
    await rejectsHr(builder.vm("b", []), "SNAPSHOT_CLOSED");
    await assertOnly(store, ["first"]);
    assert.deepEqual(await readdir(store.root), ["first"]);
  });

  it("a builder dropped without commit is never listed and is not removed while its process lives", async () => {
    const store = await dirs.store();
    await buildSmall(store, "first", 2);
    const builder = await store.begin("dropped");
    const vm = await builder.vm("a", [{ id: "pc.ram", usedLength: 16 * 4096 }]);
    await vm.writePage("pc.ram", 4096, Buffer.alloc(4096, 1));
    await vm.setDeviceState(Buffer.from("dev"));
    await assertOnly(store, ["first"]);
    await rejectsHr(store.open("dropped"), "SNAPSHOT_NOT_FOUND");
    assert.deepEqual(await store.cleanupStale(), []);
    assert.equal(await exists(builder.tempDir), true);
    await builder.abort();
  });

  it("a process killed mid-snapshot leaves a temporary directory that cleanupStale removes", async () => {
    const store = await dirs.store();
    await buildSmall(store, "first", 3);
    const child = spawn(process.execPath, ["--import", "tsx", CHILD, store.root, "crashed"], {
      cwd: REPO,
      stdio: ["ignore", "pipe", "inherit"],
    });
    let output = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      output += chunk;
      if (output.includes("\n")) child.kill("SIGKILL");
    });
    await once(child, "exit");
    const tempDir = /^ready (.+)$/m.exec(output)?.[1];
    assert.ok(tempDir !== undefined, `child said ${JSON.stringify(output)}`);
    assert.equal(await exists(tempDir), true);
    await assertOnly(store, ["first"]);
    const trash = join(store.root, ".trash-old-0000");
    await mkdir(trash);
    const removed = await store.cleanupStale();
    assert.equal(removed.length, 2);
    assert.equal(await exists(tempDir), false);
    assert.equal(await exists(trash), false);
    await assertOnly(store, ["first"]);
    // The name is free again.
    await buildSmall(store, "crashed", 4);
    await assertOnly(store, ["first", "crashed"]);
  });

  it("refuses duplicate and invalid names", async () => {
    const store = await dirs.store();
    await buildSmall(store, "taken", 5);
    await rejectsHr(store.begin("taken"), "SNAPSHOT_EXISTS");
    for (const bad of ["", "Upper", "../x", ".tmp-x", "a/b", "x".repeat(65), "-dash", "sp ace"]) {
      await rejectsHr(store.begin(bad), "SNAPSHOT_BAD_NAME");
      await rejectsHr(store.open(bad), "SNAPSHOT_BAD_NAME");
    }
    // Two writers racing for one name: the second commit is refused and leaves nothing behind.
    const one = await store.begin("race");
    const two = await store.begin("race");
    for (const builder of [one, two]) {
      const vm = await builder.vm("a", [{ id: "pc.ram", usedLength: 4096 }]);
      await vm.setDeviceState(Buffer.from(builder.tempDir));
    }
    await one.commit();
    await rejectsHr(two.commit(), "SNAPSHOT_EXISTS");
    assert.equal(await exists(two.tempDir), false);
    await assertOnly(store, ["taken", "race"]);
    const reader = await store.open("race");
    assert.equal((await reader.deviceState("a")).toString(), one.tempDir);
    await reader.close();
  });

  it("removes a snapshot atomically", async () => {
    const store = await dirs.store();
    await buildSmall(store, "keep", 6);
    await buildSmall(store, "drop", 7);
    await store.remove("drop");
    await assertOnly(store, ["keep"]);
    await rejectsHr(store.remove("drop"), "SNAPSHOT_NOT_FOUND");
    await rejectsHr(store.verify("drop"), "SNAPSHOT_NOT_FOUND");
    assert.deepEqual(await readdir(store.root), ["keep"]);
  });

  it("a full disk gives SNAPSHOT_DISK_FULL naming the file, and removes the partial snapshot", async (t) => {
    const mount = await dirs.make("hr-store-tmpfs-");
    try {
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=3m", "tmpfs", mount], { stdio: "ignore" });
    } catch {
      t.skip("cannot mount a small tmpfs here (needs root)");
      return;
    }
    mounts.push(mount);
    const store = new SnapshotStore(join(mount, "store"), { stagingPages: 16 });
    await buildSmall(store, "small", 8);
    const builder = await store.begin("big");
    const vm = await builder.vm("a", [{ id: "0000:00:02.0/vga.vram", usedLength: 4096 * 4096 }]);
    const rng = new Rng(8);
    const error = await rejectsHr(
      (async () => {
        for (let page = 0; page < 4096; page++)
          await vm.writePage("0000:00:02.0/vga.vram", page * 4096, rng.bytes(4096));
        await vm.setDeviceState(Buffer.alloc(10));
        await builder.commit();
      })(),
      "SNAPSHOT_DISK_FULL",
    );
    assert.match(error.message, /big\/vms\/a\/ram\/0000%3A00%3A02\.0%2Fvga\.vram\.raw/);
    assert.equal(await exists(builder.tempDir), false);
    await assertOnly(store, ["small"]);
    await rm(join(mount, "store"), { recursive: true });
  });

  it("lists a snapshot whose manifest is damaged as damaged, without failing the list", async () => {
    const store = await dirs.store();
    await buildSmall(store, "good", 9);
    await buildSmall(store, "bad", 10);
    await rm(join(store.root, "bad", "manifest.json"));
    const entries = await store.list();
    const bad = entries.find((entry) => entry.status === "damaged");
    assert.ok(bad?.status === "damaged");
    assert.equal(bad.name, "bad");
    assert.equal(bad.error.code, "SNAPSHOT_CORRUPT");
    assert.match(bad.error.message, /bad\/manifest\.json: missing/);
    assert.equal(entries.filter((entry) => entry.status === "ok").length, 1);
  });
});
