import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { kernelCommandLine, optValue, qemuArgv } from "../../../src/vm/argv.ts";

const paths = {
  kernel: "/c/vmlinuz",
  initrd: "/c/initramfs.cpio.gz",
  qmpSocket: "/s/vm,1/qmp.sock",
  agentSocket: "/s/agent.sock",
  consoleLog: "/s/console.log",
  netSocket: "/s/switch/db.sock",
  disk: "/s/disk.qcow2",
};

describe("QEMU argv", () => {
  it("builds an argv array with the VM's devices and fixed ids", () => {
    const argv = qemuArgv(
      {
        name: "db",
        memoryMiB: 256,
        vcpus: 1,
        accel: "tcg",
        mac: "52:54:00:00:00:02",
        guestParams: { "hr.name": "db", "hr.ip": "10.0.0.2/24" },
      },
      paths,
    );
    const at = (flag: string, value: string): boolean =>
      argv.some((arg, i) => arg === flag && argv[i + 1] === value);
    assert.ok(at("-accel", "tcg"));
    assert.ok(at("-m", "256"));
    assert.ok(at("-object", "memory-backend-ram,id=ram0,size=256M"), "guest RAM is the ram0 block");
    assert.ok(at("-machine", "pc,memory-backend=ram0"));
    assert.ok(at("-qmp", "unix:/s/vm,,1/qmp.sock,server=on,wait=off"), "commas in paths are doubled");
    assert.ok(at("-device", "virtio-net-pci,id=nic0,netdev=net0,mac=52:54:00:00:00:02"));
    assert.ok(at("-netdev", "stream,id=net0,server=off,addr.type=unix,addr.path=/s/switch/db.sock"));
    assert.ok(at("-device", "virtio-blk-pci,id=blk0,drive=disk0"));
    assert.ok(at("-append", "console=ttyS0 quiet panic=-1 nokaslr hr.name=db hr.ip=10.0.0.2/24"));
  });

  it("leaves out the NIC and disk when there are none", () => {
    const argv = qemuArgv(
      { name: "a", memoryMiB: 128, vcpus: 2, accel: "kvm", mac: "52:54:00:00:00:03", guestParams: {} },
      { ...paths, netSocket: undefined, disk: undefined },
    );
    assert.ok(!argv.includes("-netdev"));
    assert.ok(!argv.some((arg) => arg.startsWith("virtio-blk")));
  });

  it("refuses kernel parameters that could smuggle other options", () => {
    assert.throws(() => kernelCommandLine({ "hr.name": "a b" }));
    assert.throws(() => kernelCommandLine({ "hr.name": "a;init=/bin/sh" }));
    assert.equal(optValue("a,b"), "a,,b");
  });
});
