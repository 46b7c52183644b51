import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { mappingUsage, mmapRamBackend } from "../../../src/restore/vm/mmap-backend.ts";
import { verifyInBackground, verifyMemory } from "../../../src/restore/vm/mmap-verify.ts";
import type { VmMemoryReader } from "../../../src/snapshot/store/index.ts";
import { HrError, isHrError } from "../../../src/util/errors.ts";
import { qemuArgv } from "../../../src/vm/argv.ts";
import type { Vm } from "../../../src/vm/vm.ts";

describe("mmap RAM backend argv", () => {
  it("maps the raw image private and writable, with id ram0 and the VM's size", () => {
    assert.deepEqual(mmapRamBackend("/s/vms/db/ram/ram0.raw", 192), [
      "-object",
      "memory-backend-file,id=ram0,size=192M,mem-path=/s/vms/db/ram/ram0.raw,share=off,readonly=off,discard-data=off,prealloc=off",
    ]);
  });

  it("doubles commas in the path so QEMU's option parser keeps it whole", () => {
    const [, options] = mmapRamBackend("/a,b/ram0.raw", 64);
    assert.match(options ?? "", /mem-path=\/a,,b\/ram0\.raw,share=off/);
  });

  it("refuses a size that is not a whole positive number of MiB", () => {
    assert.throws(() => mmapRamBackend("/x", 0), RangeError);
    assert.throws(() => mmapRamBackend("/x", 1.5), RangeError);
  });

  it("replaces the anonymous backend in the VM's argv, keeping memory-backend=ram0", () => {
    const argv = qemuArgv(
      {
        name: "db",
        memoryMiB: 192,
        vcpus: 1,
        accel: "tcg",
        mac: "52:54:00:00:00:02",
        guestParams: {},
        ramBackend: mmapRamBackend("/s/ram0.raw", 192),
      },
      {
        kernel: "k",
        initrd: "i",
        qmpSocket: "q",
        agentSocket: "a",
        consoleLog: "c",
        netSocket: undefined,
        disk: undefined,
      },
    );
    assert.equal(argv.filter((arg) => arg.startsWith("memory-backend-")).length, 1);
    assert.ok(argv.includes("pc,memory-backend=ram0"));
    assert.ok(argv.some((arg) => arg.startsWith("memory-backend-file,id=ram0,")));
  });
});

const SMAPS = `55d0c0a00000-55d0c0c00000 r-xp 00000000 fd:00 1234 /usr/bin/qemu-system-x86_64
Size:               2048 kB
Rss:                1024 kB
Private_Dirty:         0 kB
7ff4a3fff000-7ff4a7fff000 rw-p 00000000 fd:00 99 /snap/s/vms/db/ram/ram0.raw
Size:              65536 kB
KernelPageSize:        4 kB
Rss:                 864 kB
Pss:                 864 kB
Shared_Clean:          0 kB
Shared_Dirty:          0 kB
Private_Clean:       800 kB
Private_Dirty:        64 kB
Anonymous:            64 kB
VmFlags: rd wr mr mw me ac sd
7ff4a7fff000-7ff4affff000 rw-p 04000000 fd:00 99 /snap/s/vms/db/ram/ram0.raw
Size:             131072 kB
Rss:                 100 kB
Shared_Clean:         36 kB
Private_Clean:         0 kB
Private_Dirty:        64 kB
7ff4b0000000-7ff4b0001000 rw-p 00000000 00:00 0
Size:                  4 kB
Rss:                   4 kB
Private_Dirty:         4 kB
7ff4b1000000-7ff4b2000000 rw-p 00000000 fd:00 100 /other/ram0.raw
Size:              16384 kB
Rss:               16384 kB
`;

describe("mapping usage from /proc/PID/smaps", () => {
  it("sums every entry of the file's mapping (split by mprotect) and nothing else", () => {
    assert.deepEqual(mappingUsage(SMAPS, 99, "ram0.raw"), {
      sizeBytes: (65536 + 131072) * 1024,
      rssBytes: (864 + 100) * 1024,
      cleanBytes: (800 + 36) * 1024,
      dirtyBytes: (64 + 64) * 1024,
    });
  });

  it("tells files apart by inode, and a missing mapping from an empty one", () => {
    assert.equal(mappingUsage(SMAPS, 100, "ram0.raw")?.rssBytes, 16384 * 1024);
    assert.equal(mappingUsage(SMAPS, 7, "ram0.raw"), undefined);
    assert.equal(mappingUsage(SMAPS, 99, "pc.bios.raw"), undefined);
    assert.equal(mappingUsage("", 99, "ram0.raw"), undefined);
  });

  it("still finds a mapping whose file was deleted meanwhile", () => {
    const text = "7f00-7f10 rw-p 00000000 fd:00 5 /s/ram0.raw (deleted)\nRss:   8 kB\n";
    assert.equal(mappingUsage(text, 5, "ram0.raw")?.rssBytes, 8192);
  });
});

function fakeMemory(verify: () => Promise<{ file: string; problem: string }[]>): VmMemoryReader {
  return { vm: "db", verify } as unknown as VmMemoryReader;
}

function fakeVm(calls: string[]): Vm {
  return {
    spec: { name: "db" },
    qmp: {
      execute: (command: string) => {
        calls.push(`qmp ${command}`);
        return Promise.resolve({});
      },
    },
    stop: () => {
      calls.push("stop");
      return Promise.resolve();
    },
  } as unknown as Vm;
}

describe("checking the memory image", () => {
  it("reports intact, damaged (naming every file) and failed without throwing", async () => {
    assert.equal((await verifyMemory(fakeMemory(() => Promise.resolve([])))).status, "intact");
    const damaged = await verifyMemory(
      fakeMemory(() =>
        Promise.resolve([
          { file: "vms/db/ram/ram0.raw", problem: "chunk 3 checksum mismatch" },
          { file: "vms/db/ram/pc.bios.raw", problem: "chunk 0 checksum mismatch" },
        ]),
      ),
    );
    assert.equal(damaged.status, "damaged");
    assert.ok(isHrError(damaged.error, "SNAPSHOT_CORRUPT"));
    assert.match(damaged.error.message, /VM db: .*ram0\.raw: chunk 3 .*pc\.bios\.raw/);
    const failed = await verifyMemory(fakeMemory(() => Promise.reject(new Error("EIO"))));
    assert.ok(failed.status === "failed" && failed.error.code === "RESTORE_VERIFY_FAILED");
    const corrupt = await verifyMemory(
      fakeMemory(() => Promise.reject(new HrError("SNAPSHOT_CORRUPT", "ram0.raw: missing"))),
    );
    assert.equal(corrupt.status, "damaged");
  });

  it("in the background, pauses then stops a VM on damage and says so once", async () => {
    const calls: string[] = [];
    const heard: HrError[] = [];
    const check = verifyInBackground(
      fakeVm(calls),
      fakeMemory(() =>
        Promise.resolve([{ file: "vms/db/ram/ram0.raw", problem: "chunk 1 checksum mismatch" }]),
      ),
      (error) => heard.push(error),
    );
    const verdict = await check.done;
    assert.equal(verdict.status, "damaged");
    assert.deepEqual(calls, ["qmp stop", "stop"]);
    assert.equal(heard.length, 1);
    assert.equal(heard[0]?.code, "SNAPSHOT_CORRUPT");
    assert.match(heard[0]?.message ?? "", /ram0\.raw.*VM db was stopped/);
  });

  it("fails closed when the check cannot finish, and a throwing listener changes nothing", async () => {
    const calls: string[] = [];
    const check = verifyInBackground(
      fakeVm(calls),
      fakeMemory(() => Promise.reject(new Error("file closed"))),
      () => {
        throw new Error("listener bug");
      },
    );
    assert.equal((await check.done).status, "failed");
    assert.deepEqual(calls, ["qmp stop", "stop"]);
  });

  it("leaves the VM alone when intact or cancelled", async () => {
    const calls: string[] = [];
    assert.equal(
      (
        await verifyInBackground(
          fakeVm(calls),
          fakeMemory(() => Promise.resolve([])),
          undefined,
        ).done
      ).status,
      "intact",
    );
    let release: (value: { file: string; problem: string }[]) => void = () => undefined;
    const pending = new Promise<{ file: string; problem: string }[]>((resolve) => {
      release = resolve;
    });
    const check = verifyInBackground(
      fakeVm(calls),
      fakeMemory(() => pending),
      undefined,
    );
    check.cancel();
    release([{ file: "vms/db/ram/ram0.raw", problem: "chunk 0 checksum mismatch" }]);
    assert.equal((await check.done).status, "cancelled");
    assert.deepEqual(calls, []);
  });
});
