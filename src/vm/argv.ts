/**
 * Builds the argv of one QEMU process. Pure: no I/O, no shell. Every VM is started from an argv
 * array; nothing a user wrote ever reaches a shell on the host (names are validated, the kernel
 * command line carries only validated names and addresses).
 *
 * Devices carry fixed ids so that a later QEMU started for a restore has the same device tree.
 */
export type Accel = "kvm" | "tcg";

export const AGENT_PORT_NAME = "org.hotrestore.agent";
/** The RAMBlock id of guest RAM (the memory backend's id). */
export const RAM_BLOCK_ID = "ram0";

export interface QemuPaths {
  kernel: string;
  initrd: string;
  qmpSocket: string;
  agentSocket: string;
  consoleLog: string;
  /** The switch's unix socket for this VM's NIC; undefined = no NIC. */
  netSocket: string | undefined;
  /** qcow2 disk image; undefined = no disk. */
  disk: string | undefined;
}

export interface QemuVmConfig {
  name: string;
  memoryMiB: number;
  vcpus: number;
  accel: Accel;
  mac: string;
  /** Kernel command line parameters for our /init (hr.name, hr.ip, hr.hosts, hr.disk). */
  guestParams: Record<string, string>;
  /** The `-object` arguments of the RAM backend (id RAM_BLOCK_ID); default: anonymous memory. */
  ramBackend?: readonly string[];
  /** Extra arguments appended verbatim (e.g. -incoming defer for a restore). */
  extra?: readonly string[];
}

/** QEMU option values use ',' as separator; a literal comma is written twice. */
export function optValue(value: string): string {
  return value.replaceAll(",", ",,");
}

export function kernelCommandLine(params: Record<string, string>): string {
  const parts = ["console=ttyS0", "quiet", "panic=-1", "nokaslr"];
  for (const [key, value] of Object.entries(params)) {
    if (!/^[A-Za-z0-9_.:,/=-]*$/.test(value) || !/^[a-z][a-z0-9_.]*$/.test(key)) {
      throw new Error(`kernel parameter ${key}=${value} has characters that are not allowed`);
    }
    parts.push(`${key}=${value}`);
  }
  return parts.join(" ");
}

export function qemuArgv(vm: QemuVmConfig, paths: QemuPaths): string[] {
  const argv = [
    "-name",
    `${vm.name},debug-threads=on`,
    "-accel",
    vm.accel,
    // Guest RAM is an explicit backend with a fixed id, so its RAMBlock is "ram0" whatever backs
    // it: anonymous memory when booted (background-snapshot and post-copy need that), a file of the
    // snapshot mapped copy-on-write for the mmap restore strategy.
    ...(vm.ramBackend ?? ["-object", `memory-backend-ram,id=${RAM_BLOCK_ID},size=${vm.memoryMiB}M`]),
    "-machine",
    `pc,memory-backend=${RAM_BLOCK_ID}`,
    "-m",
    String(vm.memoryMiB),
    "-smp",
    String(vm.vcpus),
    "-nodefaults",
    "-no-user-config",
    "-no-reboot",
    "-display",
    "none",
    "-vga",
    "none",
    "-chardev",
    `file,id=console0,path=${optValue(paths.consoleLog)}`,
    "-serial",
    "chardev:console0",
    "-kernel",
    paths.kernel,
    "-initrd",
    paths.initrd,
    "-append",
    kernelCommandLine(vm.guestParams),
    "-qmp",
    `unix:${optValue(paths.qmpSocket)},server=on,wait=off`,
    "-chardev",
    `socket,id=agent0,path=${optValue(paths.agentSocket)},server=on,wait=off`,
    "-device",
    "virtio-serial-pci,id=vser0",
    "-device",
    `virtserialport,id=agentport0,chardev=agent0,name=${AGENT_PORT_NAME}`,
    // Entropy for the guest: without it mke2fs and TCP's ISN generation wait for the pool under TCG.
    "-device",
    "virtio-rng-pci,id=rng0",
  ];
  if (paths.netSocket !== undefined) {
    argv.push(
      "-netdev",
      `stream,id=net0,server=off,addr.type=unix,addr.path=${optValue(paths.netSocket)}`,
      "-device",
      `virtio-net-pci,id=nic0,netdev=net0,mac=${vm.mac}`,
    );
  }
  if (paths.disk !== undefined) {
    argv.push(
      "-blockdev",
      `driver=qcow2,node-name=disk0,file.driver=file,file.filename=${optValue(paths.disk)}`,
      "-device",
      "virtio-blk-pci,id=blk0,drive=disk0",
    );
  }
  argv.push(...(vm.extra ?? []));
  return argv;
}
