import type { Flow } from "../../net/flows.ts";
import type { InflightFrame, SnapshotReader, VmMemoryReader } from "../../snapshot/store/index.ts";
import type { ClusterSpec } from "../../spec/schema.ts";
import { validateSpec } from "../../spec/validate.ts";
import { HrError } from "../../util/errors.ts";
import { DEFAULT_W0_PAGES } from "../vm/lazy.ts";
import { vmStreamSource, type VmStreamSource } from "../vm/stream-source.ts";
import { planFromSnapshot, type SnapshotPlan } from "./plan.ts";

/**
 * Everything a restore checks before it starts any QEMU process (and before it stops the cluster
 * that is running): the snapshot's spec, its VM list, and for every VM its device state,
 * configuration, RAM block list, memory indexes, working set and disk, each against its checksum;
 * the frames in flight and the traffic log. A damaged snapshot is refused here with a typed error
 * naming the file or the VM, so no guest ever starts on it.
 *
 * Not checked here, by design: the raw memory images chunk by chunk (that is reading all of every
 * VM's memory, what the lazy strategies exist to avoid); only each image's first chunk with data. Every chunk is checked against its
 * checksum (whose table the index holds, and the manifest pins the index) before any of its pages
 * leaves the store, so a damaged chunk fails the restore when it is first needed and never reaches
 * a guest; `full` and `mmap` read or check every chunk before the guest runs.
 */

export type SnapshotTraffic = { flows?: (Flow & { lastSeenAgoMs?: number })[] } | null;

export interface RestoreInputs {
  spec: ClusterSpec;
  plan: SnapshotPlan;
  traffic: SnapshotTraffic;
  inflight: InflightFrame[];
  /** Per VM: what its restore streams to QEMU, each piece checked. */
  sources: Map<string, VmStreamSource>;
}

/** Disk image file name a snapshot keeps per VM (`addVmFile`). */
export const DISK_FILE = "disk.qcow2";
/** Names of the block of guest RAM: `ram0` (ours), `pc.ram` (QEMU's default, older snapshots). */
const MAIN_RAM_BLOCKS = new Set(["ram0", "pc.ram"]);
const MIB = 1024 * 1024;

/** `file`: the file the mismatch was found in, relative to the store (e.g. `s1/manifest.json`). */
function mismatch(file: string, message: string): HrError {
  return new HrError("SNAPSHOT_MISMATCH", `${file}: ${message}`, {
    hint: "the snapshot is damaged; run `hotrestore snapshot verify`, or take a new one",
  });
}

export async function preflightRestore(snapshot: SnapshotReader): Promise<RestoreInputs> {
  const name = snapshot.manifest.name;
  const spec = validateSpec(snapshot.spec, `${name}/manifest.json: its spec`);
  const stored = [...snapshot.vmNames()].sort();
  const wanted = spec.vms.map((vm) => vm.name).sort();
  if (stored.join(",") !== wanted.join(",")) {
    throw mismatch(
      `${name}/manifest.json`,
      `it holds VMs [${stored.join(", ")}] but its spec names [${wanted.join(", ")}]`,
    );
  }
  const sources = new Map<string, VmStreamSource>();
  for (const vmSpec of spec.vms) {
    const vm = vmSpec.name;
    const source = await vmStreamSource(snapshot, vm);
    checkBlocks(name, vm, vmSpec.memoryMiB, source, snapshot);
    await checkFirstChunks(source.memory);
    sources.set(vm, source);
    await snapshot.workingSet(vm); // checked here; the lazy strategies read it again after this
    if (snapshot.vmFileNames(vm).includes(DISK_FILE)) await snapshot.verifyVmFile(vm, DISK_FILE);
  }
  const plan = await planFromSnapshot(snapshot, { minW0Pages: DEFAULT_W0_PAGES });
  const traffic = (await snapshot.traffic()) as SnapshotTraffic;
  const inflight = await snapshot.inflight();
  return { spec, plan, traffic, inflight, sources };
}

/**
 * Reads (and so checks) the first chunk holding data of every memory image: a raw image that is
 * not this VM's (swapped with another VM's, copied from another snapshot) is refused here, before
 * start, for the price of one 64 KiB chunk per block. Damage elsewhere in it is found when read.
 */
async function checkFirstChunks(memory: VmMemoryReader): Promise<void> {
  for (const block of memory.blockIds()) {
    const pages = memory.pageCount(block);
    let page = 0;
    while (page < pages && !memory.isPresent(block, page)) page += 1;
    if (page < pages) await memory.readPage(block, page);
  }
}

/** The RAM block list QEMU will be sent (ramstart.bin) must be the one the store holds, sized as the spec says. */
function checkBlocks(
  name: string,
  vm: string,
  memoryMiB: number,
  source: VmStreamSource,
  snapshot: SnapshotReader,
): void {
  const streamed = source.ramStart.blocks.map((block) => `${block.id}:${block.usedLength}`);
  const held = snapshot.vm(vm).blocks.map((block) => `${block.id}:${block.usedLength}`);
  if (streamed.join(",") !== held.join(",")) {
    throw mismatch(
      name,
      `VM ${vm}: ramstart.bin lists RAM blocks [${streamed.join(", ")}], the store holds [${held.join(", ")}]`,
    );
  }
  const main = source.ramStart.blocks.find((block) => MAIN_RAM_BLOCKS.has(block.id));
  if (main !== undefined && main.usedLength !== memoryMiB * MIB) {
    throw mismatch(
      name,
      `VM ${vm}: its memory image holds ${main.usedLength} bytes, its spec says ${memoryMiB} MiB`,
    );
  }
}
