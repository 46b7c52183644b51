import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { SnapshotStore } from "../../../src/snapshot/store/index.ts";
import { encodeManifest, type ManifestBody } from "../../../src/snapshot/store/manifest.ts";
import { decodeWorkingSetFile, encodeWorkingSet } from "../../../src/snapshot/store/working-set-file.ts";
import { HrError } from "../../../src/util/errors.ts";
import { BLOCKS, buildSmall, DISK_BYTES, rejectsHr, TempDirs, type Expected } from "./store-fixture.ts";

const dirs = new TempDirs();
after(() => dirs.removeAll());

const ZERO = Buffer.alloc(4096);

for (const stagingPages of [2048, 7]) {
  describe(`snapshot store round trip (staging of ${stagingPages} pages)`, () => {
    let store: SnapshotStore;
    let expected: Expected;

    before(async () => {
      store = new SnapshotStore(await dirs.make(), { stagingPages });
      expected = await buildSmall(store, "lab-1", 20240601 + stagingPages);
    });

    it("reads back every page as last written, zeros for zero pages and pages never written", async () => {
      const reader = await store.open("lab-1");
      try {
        for (const vm of reader.vmNames()) {
          const memory = await reader.memory(vm);
          for (const block of reader.vm(vm).blocks) {
            const written = expected.get(`${vm}|${block.id}`);
            assert.ok(written);
            for (let page = 0; page < block.pages; page++) {
              const want: Buffer = written.get(page) ?? ZERO;
              assert.deepEqual(await memory.readPage(block.id, page), want, `${vm} ${block.id} page ${page}`);
              assert.equal(memory.isPresent(block.id, page), written.get(page) !== undefined);
            }
          }
        }
      } finally {
        await reader.close();
      }
    });

    it("iterates the stored pages of a block in address order", async () => {
      const reader = await store.open("lab-1");
      try {
        const memory = await reader.memory("alpha");
        for (const block of BLOCKS) {
          const written = expected.get(`alpha|${block.id}`);
          assert.ok(written);
          const want = [...written.entries()]
            .filter(([, data]) => data !== undefined)
            .sort(([a], [b]) => a - b);
          const got: [number, Buffer][] = [];
          for await (const { page, data } of memory.pages(block.id)) got.push([page, Buffer.from(data)]);
          assert.deepEqual(got, want);
        }
      } finally {
        await reader.close();
      }
    });

    it("keeps zero pages as holes in a page-addressable raw file", async () => {
      const reader = await store.open("lab-1");
      try {
        const memory = await reader.memory("alpha");
        const path = memory.rawPath("pc.ram");
        const stats = await stat(path);
        assert.equal(stats.size, 600 * 4096);
        assert.ok(stats.blocks * 512 < stats.size, `allocated ${stats.blocks * 512} of ${stats.size}`);
        const raw = await readFile(path);
        const written = expected.get("alpha|pc.ram");
        for (const [page, data] of written ?? []) {
          assert.deepEqual(raw.subarray(page * 4096, (page + 1) * 4096), data ?? ZERO);
        }
        assert.match(path, /vms\/alpha\/ram\/pc\.ram\.raw$/);
        assert.match(memory.rawPath("0000:00:02.0/vga.vram"), /ram\/0000%3A00%3A02\.0%2Fvga\.vram\.raw$/);
        assert.match(memory.rawPath("/rom@etc/acpi/tables"), /ram\/%2From%40etc%2Facpi%2Ftables\.raw$/);
      } finally {
        await reader.close();
      }
    });

    it("round-trips blobs, working set, in-flight frames, traffic, spec and pause", async () => {
      const reader = await store.open("lab-1");
      try {
        assert.equal((await reader.configuration("alpha")).toString(), "config of alpha");
        assert.deepEqual(await reader.ramStart("beta"), Buffer.from([1, 2, 3]));
        assert.ok((await reader.deviceState("beta")).length >= 5000);
        assert.deepEqual(await reader.workingSet("alpha"), [
          { blockId: "pc.ram", page: 5 },
          { blockId: "pc.ram", page: 1 },
          { blockId: "0000:00:02.0/vga.vram", page: 0 },
        ]);
        // The snapshot's first working set carries its pages' copies already.
        const { entries, copies } = await reader.workingSetWithCopies("alpha");
        assert.equal(copies.length, entries.length * 4096);
        for (const [i, entry] of entries.entries()) {
          const want = expected.get(`alpha|${entry.blockId}`)?.get(entry.page) ?? ZERO;
          assert.ok(copies.subarray(i * 4096, (i + 1) * 4096).equals(want), `copy ${i}`);
        }
        const frames = await reader.inflight();
        assert.deepEqual(
          frames.map((frame) => [frame.to, frame.from, frame.data.length]),
          [
            ["beta", "alpha", 26],
            ["alpha", "", 1514],
          ],
        );
        assert.deepEqual(await reader.traffic(), { edges: [{ from: "alpha", to: "beta", bytes: 1234 }] });
        assert.deepEqual(reader.spec, { name: "lab", vms: [{ name: "alpha" }, { name: "beta" }] });
        assert.equal(reader.manifest.pauseMs, 42.5);
        assert.equal(reader.vm("beta").pauseMs, 13.25);
        assert.deepEqual(reader.vm("alpha").machine, { machine: "pc-q35-7.2", vm: "alpha" });
        assert.deepEqual(reader.vmFileNames("alpha"), ["disk.qcow2"]);
        assert.deepEqual(reader.vmFileNames("beta"), []);
        assert.deepEqual(await readFile(reader.vmFilePath("alpha", "disk.qcow2")), DISK_BYTES);
        assert.match(reader.vmFilePath("alpha", "disk.qcow2"), /lab-1\/vms\/alpha\/files\/disk\.qcow2$/);
        await reader.verifyVmFile("alpha", "disk.qcow2");
        assert.throws(() => reader.vmFilePath("beta", "disk.qcow2"), { code: "SNAPSHOT_BAD_INPUT" });
      } finally {
        await reader.close();
      }
    });

    it("lists and inspects with the right figures", async () => {
      const [entry, ...rest] = await store.list();
      assert.equal(rest.length, 0);
      assert.ok(entry?.status === "ok");
      const summary = entry.summary;
      assert.equal(summary.name, "lab-1");
      assert.equal(summary.path, join(store.root, "lab-1"));
      assert.equal(summary.vms.length, 2);
      for (const vm of summary.vms) {
        const blocks = vm.name === "alpha" ? BLOCKS : [BLOCKS[0], { id: "pc.bios", usedLength: 32 * 4096 }];
        let present = 0;
        for (const block of blocks) {
          for (const data of expected.get(`${vm.name}|${block?.id ?? ""}`)?.values() ?? []) {
            if (data !== undefined) present++;
          }
        }
        assert.equal(vm.presentPages, present);
        assert.equal(vm.zeroPages, vm.pages - present);
        assert.equal(vm.ramBytes, vm.pages * 4096);
        assert.equal(vm.workingSetPages, 3);
        assert.ok(vm.storedBytes >= present * 4096, `${vm.storedBytes} stored for ${present} pages`);
        assert.ok(vm.storedBytes < vm.ramBytes);
        assert.ok(vm.files.includes(`vms/${vm.name}/device.bin`));
      }
      assert.equal(summary.inflightFrames, 2);
      assert.deepEqual(await store.inspect("lab-1"), summary);
      assert.deepEqual((await readdir(store.root)).sort(), ["lab-1"]);
    });

    it("replaces the working set atomically and keeps the manifest valid", async () => {
      const reader = await store.open("lab-1");
      try {
        const first = [
          { blockId: "pc.bios", page: 31 },
          { blockId: "pc.ram", page: 0 },
        ];
        await reader.replaceWorkingSet("beta", first);
        // The refined file carries a copy of each page, as the memory image's checked reads give it.
        const copied = await reader.workingSetWithCopies("beta");
        assert.deepEqual(copied.entries, first);
        assert.equal(copied.copies.length, first.length * 4096);
        for (const [i, entry] of first.entries()) {
          const want = expected.get(`beta|${entry.blockId}`)?.get(entry.page) ?? ZERO;
          assert.ok(copied.copies.subarray(i * 4096, (i + 1) * 4096).equals(want), `copy ${i}`);
        }
        assert.ok(!copied.copies.equals(Buffer.alloc(copied.copies.length)), "the fixture's pages hold data");
        await reader.replaceWorkingSet("beta", [{ blockId: "pc.bios", page: 2 }]);
        assert.deepEqual(await reader.workingSet("beta"), [{ blockId: "pc.bios", page: 2 }]);
        await rejectsHr(
          reader.replaceWorkingSet("beta", [{ blockId: "pc.bios", page: 32 }]),
          "SNAPSHOT_BAD_INPUT",
        );
      } finally {
        await reader.close();
      }
      const again = await store.open("lab-1");
      assert.deepEqual(await again.workingSet("beta"), [{ blockId: "pc.bios", page: 2 }]);
      assert.equal(again.vm("beta").workingSet.file, "vms/beta/workingset-2.bin");
      await again.close();
      const files = await readdir(join(store.root, "lab-1", "vms", "beta"));
      assert.deepEqual(
        files.filter((file) => file.startsWith("workingset")),
        ["workingset-2.bin"],
      );
      const report = await store.verify("lab-1");
      assert.deepEqual(report.damages, []);
      assert.equal(report.ok, true);
      assert.equal((await store.inspect("lab-1")).vms.find((vm) => vm.name === "beta")?.workingSetPages, 1);

      // A copy that differs from the memory image (file and manifest consistent) is damage to verify.
      const wsPath = join(store.root, "lab-1", "vms", "beta", "workingset-2.bin");
      const original = await readFile(wsPath);
      const { slots, copies } = decodeWorkingSetFile("x", original);
      const wrong = Buffer.from(copies);
      wrong[100] = (wrong[100] ?? 0) ^ 0xff;
      const tampered = encodeWorkingSet(slots, wrong);
      const manifestPath = join(store.root, "lab-1", "manifest.json");
      const manifest = await readFile(manifestPath);
      const { checksum: _checksum, ...body } = JSON.parse(manifest.toString()) as Record<string, unknown>;
      for (const file of body.files as { path: string; size: number; sha256: string }[]) {
        if (file.path !== "vms/beta/workingset-2.bin") continue;
        file.size = tampered.length;
        file.sha256 = createHash("sha256").update(tampered).digest("hex");
      }
      await writeFile(wsPath, tampered);
      await writeFile(manifestPath, encodeManifest(body as unknown as ManifestBody));
      try {
        const damaged = await store.verify("lab-1");
        assert.deepEqual(damaged.damages, [
          {
            file: "vms/beta/workingset-2.bin",
            problem: "the copies of 1 entries differ from the memory image (first: entry 0)",
          },
        ]);
      } finally {
        await writeFile(wsPath, original);
        await writeFile(manifestPath, manifest);
      }
      assert.equal((await store.verify("lab-1")).ok, true);
    });

    it("refuses misuse of the builder and reader with SNAPSHOT_BAD_INPUT", async () => {
      const builder = await store.begin("misuse");
      const vm = await builder.vm("gamma", [{ id: "pc.ram", usedLength: 8 * 4096 }]);
      await rejectsHr(vm.writePage("nope", 0, "zero"), "SNAPSHOT_BAD_INPUT");
      await rejectsHr(vm.writePage("pc.ram", 100, "zero"), "SNAPSHOT_BAD_INPUT");
      await rejectsHr(vm.writePage("pc.ram", 8 * 4096, "zero"), "SNAPSHOT_BAD_INPUT");
      await rejectsHr(vm.writePage("pc.ram", 0, Buffer.alloc(100, 1)), "SNAPSHOT_BAD_INPUT");
      await rejectsHr(builder.vm("gamma", []), "SNAPSHOT_BAD_INPUT");
      await rejectsHr(builder.vm("bad/name", []), "SNAPSHOT_BAD_INPUT");
      await rejectsHr(builder.vm("odd", [{ id: "x", usedLength: 100 }]), "SNAPSHOT_BAD_INPUT");
      assert.throws(() => vm.setWorkingSet([{ blockId: "pc.ram", page: 8 }]), { code: "SNAPSHOT_BAD_INPUT" });
      assert.throws(() => builder.setSpec({ bad: Number.NaN }), { code: "SNAPSHOT_BAD_INPUT" });
      const deep: unknown = JSON.parse(`${"[".repeat(100)}${"]".repeat(100)}`);
      assert.throws(() => builder.setTraffic(deep), { code: "SNAPSHOT_BAD_INPUT" });
      assert.throws(() => builder.setInflight([{ to: "", from: "", data: Buffer.alloc(1) }]), {
        code: "SNAPSHOT_BAD_INPUT",
      });
      await rejectsHr(
        builder.addVmFile("nobody", "disk.qcow2", () => Promise.resolve()),
        "SNAPSHOT_BAD_INPUT",
      );
      await rejectsHr(
        builder.addVmFile("gamma", "../disk", () => Promise.resolve()),
        "SNAPSHOT_BAD_INPUT",
      );
      await rejectsHr(builder.commit(), "SNAPSHOT_INCOMPLETE");
      await vm.setDeviceState(Buffer.from("dev"));
      await builder.commit();
      await rejectsHr(vm.writePage("pc.ram", 0, "zero"), "SNAPSHOT_CLOSED");
      const reader = await store.open("misuse");
      const memory = await reader.memory("gamma");
      await rejectsHr(memory.readPage("pc.ram", 8), "SNAPSHOT_BAD_INPUT");
      assert.throws(() => reader.vm("alpha"), { code: "SNAPSHOT_BAD_INPUT" });
      await reader.close();
      await store.remove("misuse");
      await rejectsHr(store.open("misuse"), "SNAPSHOT_NOT_FOUND");
    });

    it("aborts the snapshot when a producer of an added file fails, with the producer's error", async () => {
      const failing = await store.begin("failing");
      await failing.vm("gamma", []);
      const boom = await rejectsHr(
        failing.addVmFile("gamma", "disk.qcow2", () =>
          Promise.reject(new HrError("DISK_IMAGE_FAILED", "boom")),
        ),
      );
      assert.equal(boom.code, "DISK_IMAGE_FAILED");
      await rejectsHr(failing.commit(), "SNAPSHOT_CLOSED");
      assert.deepEqual((await readdir(store.root)).sort(), ["lab-1"]);
    });
  });
}
