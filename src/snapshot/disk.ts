import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { HrError, messageOf } from "../util/errors.ts";
import type { Vm } from "../vm/vm.ts";

/**
 * Disks at the cut. While the VM is stopped, `blockdev-snapshot-sync` puts a new qcow2 overlay on
 * top of the disk chain: from then on the guest writes into the overlay and the old top is frozen
 * at the cut. The frozen chain is then flattened into the snapshot (`qemu-img convert`) while the
 * VM runs again. A restore runs on a fresh overlay whose backing file is the snapshot's disk, so
 * a snapshot can be restored again and again and is never written.
 */
const execFileAsync = promisify(execFile);

async function qemuImg(args: string[], what: string): Promise<void> {
  try {
    await execFileAsync("qemu-img", args, { maxBuffer: 1 << 20 });
  } catch (error) {
    throw new HrError("DISK_IMAGE_FAILED", `${what}: qemu-img ${args[0] ?? ""} failed: ${messageOf(error)}`, {
      cause: error,
      hint: "is qemu-utils installed and is there free space? (npm run setup)",
    });
  }
}

/** Freezes the VM's disk at this instant (VM stopped); returns the frozen file, or undefined without a disk. */
export async function freezeDisk(vm: Vm, generation: number): Promise<string | undefined> {
  const frozen = vm.diskFile;
  if (frozen === undefined) return undefined;
  const next = join(vm.dir, `disk-g${generation}.qcow2`);
  const node = `disk0-g${generation}`;
  try {
    await vm.qmp.execute("blockdev-snapshot-sync", {
      "node-name": vm.diskNode,
      "snapshot-file": next,
      "snapshot-node-name": node,
      format: "qcow2",
    });
  } catch (error) {
    throw new HrError(
      "DISK_SNAPSHOT_FAILED",
      `VM ${vm.spec.name}: cannot freeze its disk: ${messageOf(error)}`,
      {
        cause: error,
      },
    );
  }
  vm.diskNode = node;
  vm.diskFile = next;
  return frozen;
}

/** Copies a frozen disk chain into one self-contained qcow2 file. */
export async function exportDisk(frozen: string, destination: string): Promise<void> {
  await qemuImg(["convert", "-U", "-O", "qcow2", frozen, destination], `exporting ${frozen}`);
}

/** A fresh overlay on top of a snapshot's disk for a restored VM to write into. */
export async function overlayDisk(base: string, destination: string): Promise<void> {
  await qemuImg(
    ["create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", destination],
    `creating ${destination}`,
  );
}
