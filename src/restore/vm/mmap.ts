import { readFile, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import {
  parseConfiguration,
  writePrecopyStream,
  type PageRecord,
  type WriteStats,
} from "../../migration/index.ts";
import { PAGE_SIZE, type SnapshotReader } from "../../snapshot/store/index.ts";
import { HrError, messageOf } from "../../util/errors.ts";
import { connectUnixWithRetry } from "../../util/unix-socket.ts";
import { RAM_BLOCK_ID } from "../../vm/argv.ts";
import type { Vm, VmStartOptions } from "../../vm/vm.ts";
import type { LoadReport } from "./full.ts";
import { mappingUsage, mmapRamBackend, type MappingUsage } from "./mmap-backend.ts";
import {
  stopGuest,
  verifyInBackground,
  verifyMemory,
  type BackgroundVerification,
  type MmapVerify,
  type VerifyOutcome,
} from "./mmap-verify.ts";
import { allPages, type VmStreamSource } from "./stream-source.ts";

/**
 * Strategy `mmap` — what a Firecracker user gets, on stock QEMU 7.2: guest RAM (block ram0) is the
 * snapshot's own sparse raw image `ram0.raw`, mapped copy-on-write (memory-backend-file,
 * share=off: argv in mmap-backend.ts); the kernel pages it in when the guest touches it. QEMU is
 * started with `-S -incoming defer` and we stream it a precopy stream without ram0's pages:
 *
 *   header, CONFIGURATION (verbatim), ram START (verbatim: every block, ram0 included),
 *   ram PART (the pages of the other blocks: ROMs, ACPI tables, ~200 pages), ram END,
 *   device state (verbatim), EOF
 *
 * QEMU's precopy load takes whatever pages come and never asks for the rest, so ram0 simply keeps
 * what the mapping shows: the file. No `x-ignore-shared`: it only skips *shared* blocks (ours is
 * private, so it would change nothing), and turning it on makes QEMU require the capability in
 * the CONFIGURATION record (ours, taken without it, is refused: "Capability x-ignore-shared is on,
 * but received capability is off") and GPAs in START. Measured here, 192 MiB VM, TCG:
 *
 *   omit ram0's pages, no capability ........... loads, md5 of guest data OK, guest writes COW
 *   x-ignore-shared + capability + GPAs ........ loads and runs the same (nothing gained)
 *   x-ignore-shared, stored CONFIGURATION ...... refused by QEMU (above)
 *   readonly=on,share=off ...................... loads; the guest never answers (RAM is PROT_READ)
 *
 * The stream is ~0.6 MB (194 pages + 150 KB of device state) and QEMU loads it in ~7 ms; its
 * pages are read while QEMU starts. At ready, QEMU has written nothing into the mapping
 * (Private_Dirty 0) and has 0.7-0.9 MB of it resident (what the device load reads, e.g. virtio
 * rings). The file is unchanged after guests ran and wrote (sha256 in the integration test;
 * its size/mtime/ctime/blocks are checked here at ready).
 *
 * Damage: see mmap-verify.ts for the three `verify` modes and their costs.
 * The VM stays paused: the caller sends `cont`.
 */

export type MmapStartOptions = Omit<VmStartOptions, "incoming" | "ramBackend">;

export interface MmapLoadOptions {
  /** Default "before-start" (the only mode that keeps a damaged page from any guest). */
  verify?: MmapVerify;
  /** Bound on the stream load (QEMU's MIGRATION completed). */
  timeoutMs: number;
  /** verify "background": called once the damaged VM has been stopped. */
  onDamage?: (error: HrError) => void;
  /**
   * The file QEMU maps as ram0 instead of the raw image: the FUSE file of the kernel-paging
   * backend (kernel-paged.ts), which checks what it serves itself, so `verify` must be "off".
   */
  ramPath?: string;
}

/** `loadMs` (LoadReport) is migrate-incoming → device state loaded, as for `full`. */
export interface MmapLoadReport extends LoadReport {
  verify: MmapVerify;
  /** QEMU spawned → QMP and agent connected. */
  startMs: number;
  /** QEMU spawned → ready: paused, device state loaded, memory checked if "before-start". */
  readyMs: number;
  /** "before-start": how long the check took (it runs next to QEMU's start and load). */
  verifyMs: number | undefined;
  /** How long ready waited for the check after the load was done (0: the check was hidden). */
  verifyWaitMs: number;
  /** Stored bytes of the memory images the check read before the guest ran. */
  verifiedBytes: number;
  /** Everything read from the snapshot before the guest runs: the stream + verifiedBytes. */
  bytesReadBeforeStart: number;
  /** ram0's mapping at ready (how much the kernel had paged in); undefined if unreadable. */
  ram0AtReady: MappingUsage | undefined;
  /** verify "background": the check running next to the guest. */
  background: BackgroundVerification | undefined;
}

const MIB = 1024 * 1024;
const FINAL_STATES = new Set(["completed", "failed", "cancelled"]);

export async function loadMmap(
  vm: Vm,
  start: MmapStartOptions,
  source: VmStreamSource,
  snapshot: SnapshotReader,
  options: MmapLoadOptions,
): Promise<MmapLoadReport> {
  const verify = options.verify ?? "before-start";
  const name = vm.spec.name;
  if (options.ramPath !== undefined && verify !== "off") {
    throw new RangeError("a ramPath serves checked pages itself: verify must be off");
  }
  checkSupported(vm, source);
  const rawPath = source.memory.rawPath(RAM_BLOCK_ID);
  const fileBefore = await stat(rawPath);
  const storedBytes = snapshot
    .vm(name)
    .blocks.reduce((sum, block) => sum + block.presentPages * PAGE_SIZE, 0);

  const spawnedAt = performance.now();
  const since = (from: number): number => Math.round(performance.now() - from);
  // Settles into a value: nothing is left rejected while QEMU starts.
  const check: Promise<VerifyOutcome> | undefined =
    verify === "before-start" ? verifyMemory(source.memory) : undefined;
  // The other blocks' pages (~200, checked chunk reads) are read while QEMU starts.
  const otherPages = collectOtherPages(source);
  otherPages.catch(() => undefined);
  let startMs = 0;
  let loadMs = 0;
  let stats: WriteStats;
  try {
    await vm.start({
      ...start,
      incoming: true,
      ramBackend: mmapRamBackend(options.ramPath ?? rawPath, vm.spec.memoryMiB),
    });
    startMs = since(spawnedAt);
    const loadFrom = performance.now();
    stats = await loadWithoutRam0(vm, source, await otherPages, options.timeoutMs);
    loadMs = since(loadFrom);
  } catch (error) {
    // Damage may be why QEMU's load failed (it reads virtio rings from guest RAM): say so first.
    const outcome = await check;
    if (outcome !== undefined && outcome.status !== "intact") {
      await stopGuest(vm);
      throw outcome.error;
    }
    throw error instanceof HrError && error.code === "VM_START_FAILED"
      ? error
      : new HrError("RESTORE_LOAD_FAILED", `VM ${name}: loading its state failed: ${messageOf(error)}`, {
          cause: error,
          hint: `see ${join(vm.dir, "qemu.log")}`,
        });
  }

  const loadedAt = performance.now();
  const outcome = await check;
  const verifyWaitMs = since(loadedAt);
  if (outcome !== undefined && outcome.status !== "intact") {
    await stopGuest(vm);
    throw outcome.error;
  }
  const readyMs = since(spawnedAt);
  try {
    await checkUnchanged(name, rawPath, fileBefore);
  } catch (error) {
    await stopGuest(vm);
    throw error;
  }
  const verifiedBytes = outcome === undefined ? 0 : storedBytes;
  return {
    verify,
    startMs,
    loadMs,
    readyMs,
    verifyMs: outcome?.ms,
    verifyWaitMs: outcome === undefined ? 0 : verifyWaitMs,
    bytes: stats.bytes,
    pages: stats.pages,
    verifiedBytes,
    bytesReadBeforeStart: stats.bytes + verifiedBytes,
    ram0AtReady: await ram0Usage(vm, options.ramPath ?? rawPath),
    background: verify === "background" ? verifyInBackground(vm, source.memory, options.onDamage) : undefined,
  };
}

/** The snapshot must be restorable this way: ram0 of the VM's size, no x-ignore-shared stream. */
function checkSupported(vm: Vm, source: VmStreamSource): void {
  const name = vm.spec.name;
  const ram = source.ramStart.blocks.find((block) => block.id === RAM_BLOCK_ID);
  if (ram === undefined) {
    throw new HrError(
      "RESTORE_MMAP_UNSUPPORTED",
      `VM ${name}: its snapshot has no RAM block ${RAM_BLOCK_ID}`,
      {
        hint: "snapshots taken before guest RAM became block ram0 can only be restored with --strategy full",
      },
    );
  }
  if (ram.usedLength !== vm.spec.memoryMiB * MIB) {
    throw new HrError(
      "RESTORE_MMAP_SIZE_MISMATCH",
      `VM ${name}: its snapshot holds ${ram.usedLength} bytes of RAM, the VM has ${vm.spec.memoryMiB} MiB`,
      { hint: "the snapshot does not belong to this spec; take a new one" },
    );
  }
  if (parseConfiguration(source.configuration).capabilities.includes("x-ignore-shared")) {
    throw new HrError(
      "RESTORE_MMAP_UNSUPPORTED",
      `VM ${name}: its snapshot was taken with x-ignore-shared, which this strategy does not restore`,
      { hint: "use --strategy full" },
    );
  }
}

/** Every page of every block but ram0 (stored pages and zero records), in address order. */
async function collectOtherPages(source: VmStreamSource): Promise<PageRecord[]> {
  const others = source.ramStart.blocks.filter((block) => block.id !== RAM_BLOCK_ID);
  const pages: PageRecord[] = [];
  for await (const page of allPages({ ...source, ramStart: { ...source.ramStart, blocks: others } })) {
    pages.push(page);
  }
  return pages;
}

/** Streams everything but ram0's pages and waits for QEMU's MIGRATION completed event. */
async function loadWithoutRam0(
  vm: Vm,
  source: VmStreamSource,
  pages: readonly PageRecord[],
  timeoutMs: number,
): Promise<WriteStats> {
  const socketPath = join(vm.dir, "incoming.sock");
  await vm.qmp.execute("migrate-set-capabilities", { capabilities: [{ capability: "events", state: true }] });
  const controller = new AbortController();
  const finished = vm.qmp.waitForEvent("MIGRATION", {
    timeoutMs,
    signal: controller.signal,
    predicate: (event) => FINAL_STATES.has(event.data.status),
  });
  try {
    await vm.qmp.execute("migrate-incoming", { uri: `unix:${socketPath}` });
    const socket = await connectUnixWithRetry(socketPath, 10_000);
    try {
      const stats = await writePrecopyStream(socket, {
        configuration: source.configuration,
        ramStart: source.ramStart,
        pages,
        deviceState: source.deviceState,
      });
      const event = await finished;
      if (event.data.status !== "completed") {
        const info = await vm.qmp.execute("query-migrate");
        throw new HrError("MIGRATION_FAILED", `migration ${event.data.status}: ${info["error-desc"] ?? ""}`);
      }
      return stats;
    } finally {
      socket.destroy();
    }
  } finally {
    controller.abort();
  }
}

/** QEMU opens the file read-write (7.2 cannot do otherwise): make sure it did not write it. */
async function checkUnchanged(
  vm: string,
  path: string,
  before: Awaited<ReturnType<typeof stat>>,
): Promise<void> {
  const after = await stat(path);
  const same =
    after.ino === before.ino &&
    after.size === before.size &&
    after.blocks === before.blocks &&
    after.mtimeMs === before.mtimeMs &&
    after.ctimeMs === before.ctimeMs;
  if (!same) {
    throw new HrError("RESTORE_SNAPSHOT_MODIFIED", `VM ${vm}: QEMU changed the snapshot's RAM file ${path}`, {
      hint: "this is a bug: report it with QEMU's version and argv; the snapshot can no longer be trusted",
    });
  }
}

/**
 * ram0's mapping in QEMU now: how much of the snapshot the kernel has paged in (clean) and how
 * much the guest has written (dirty). Sample it later for the pages loaded after start.
 * Undefined when QEMU is gone or /proc cannot be read.
 */
export async function ram0Usage(vm: Vm, rawPath: string): Promise<MappingUsage | undefined> {
  if (vm.pid === undefined) return undefined;
  try {
    const [file, smaps] = await Promise.all([stat(rawPath), readFile(`/proc/${vm.pid}/smaps`, "utf8")]);
    return mappingUsage(smaps, Number(file.ino), basename(rawPath));
  } catch {
    return undefined;
  }
}
