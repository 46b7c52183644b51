/**
 * Judges one damaged copy of a snapshot the way a restore would meet it, in-process and without
 * QEMU: the store's `open` and the restore's `preflightRestore` (everything a restore checks
 * before it starts any QEMU process); if those pass, every page each VM's restore would stream to
 * QEMU (`allPages`, checked chunk by chunk), compared with the pristine snapshot's.
 */
import { createHash } from "node:crypto";
import { dirname, basename } from "node:path";
import { preflightRestore } from "../../src/restore/cluster/preflight.ts";
import type { VmStreamSource } from "../../src/restore/vm/stream-source.ts";
import { SnapshotStore } from "../../src/snapshot/store/index.ts";
import { verifySnapshot } from "../../src/snapshot/store/verify.ts";
import { HrError } from "../../src/util/errors.ts";

export type Outcome =
  /** preflightRestore refused it: no QEMU would start. */
  | { kind: "refused-before-start"; error: HrError }
  /** Passed preflight; the first checked read of a damaged chunk refused it (no page handed out). */
  | { kind: "refused-at-chunk-read"; error: HrError }
  /** Passed preflight, and every page a restore streams is the pristine one (the damage lies in bytes no restore reads). */
  | { kind: "streams-pristine-memory" }
  /** Passed preflight and streamed memory that differs from the pristine snapshot's: a guest would run on wrong memory. */
  | { kind: "wrong-memory"; vm: string }
  /** Anything but our typed error was thrown. */
  | { kind: "crash"; error: unknown };

/**
 * Per VM: sha256 over every page a restore streams with data (block, offset, bytes); the pages in
 * between are streamed as zero records, which the index (pinned by the manifest) decides.
 */
async function streamDigest(source: VmStreamSource): Promise<string> {
  const hash = createHash("sha256");
  const where = Buffer.alloc(8);
  for (const block of source.ramStart.blocks) {
    hash.update(block.id);
    for await (const stored of source.memory.pages(block.id)) {
      where.writeDoubleLE(stored.page);
      hash.update(where).update(stored.data);
    }
  }
  return hash.digest("hex");
}

export async function memoryDigests(dir: string): Promise<Map<string, string>> {
  const snapshot = await new SnapshotStore(dirname(dir)).open(basename(dir));
  try {
    const inputs = await preflightRestore(snapshot);
    const digests = new Map<string, string>();
    for (const [vm, source] of inputs.sources) digests.set(vm, await streamDigest(source));
    return digests;
  } finally {
    await snapshot.close();
  }
}

/**
 * `dir` is the damaged copy `<root>/<name>`; `pristine` the digests of `memoryDigests(pristine)`;
 * `vms`: the VMs whose memory streams are compared when the checks before start pass (all when
 * undefined).
 */
export async function judge(
  dir: string,
  pristine: ReadonlyMap<string, string>,
  vms?: readonly string[],
): Promise<Outcome> {
  let passed = false;
  const store = new SnapshotStore(dirname(dir));
  let snapshot: Awaited<ReturnType<SnapshotStore["open"]>> | undefined;
  try {
    snapshot = await store.open(basename(dir));
    const inputs = await preflightRestore(snapshot);
    passed = true;
    for (const [vm, source] of inputs.sources) {
      if (vms !== undefined && !vms.includes(vm)) continue;
      if ((await streamDigest(source)) !== pristine.get(vm)) return { kind: "wrong-memory", vm };
    }
    return { kind: "streams-pristine-memory" };
  } catch (error) {
    if (!(error instanceof HrError)) return { kind: "crash", error };
    return passed ? { kind: "refused-at-chunk-read", error } : { kind: "refused-before-start", error };
  } finally {
    await snapshot?.close();
  }
}

/** `snapshot verify`'s answer: the damaged files it lists, or the non-typed error it threw. */
export async function verifyDamages(dir: string): Promise<{ files: string[] } | { crash: unknown }> {
  try {
    const report = await verifySnapshot(dir, basename(dir));
    return { files: report.damages.map((damage) => `${damage.file}: ${damage.problem}`) };
  } catch (error) {
    if (error instanceof HrError) return { files: [error.message] };
    return { crash: error };
  }
}
