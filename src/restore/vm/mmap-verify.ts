import type { VmMemoryReader } from "../../snapshot/store/index.ts";
import { HrError, messageOf } from "../../util/errors.ts";
import type { Vm } from "../../vm/vm.ts";

/**
 * How the `mmap` strategy keeps "a damaged snapshot is never given to a guest": with guest RAM
 * mapped from the snapshot's file, the kernel pages it in behind our back, so the store's
 * per-chunk checks on read never run. Three choices:
 *
 * - `before-start` (default): check every chunk of every block before the guest runs. The check
 *   runs while QEMU starts and loads its device state, and `cont` waits for it. It reads every
 *   stored byte (and warms the page cache with them, so the guest's later faults are minor ones):
 *   its cost grows with the RAM (figures below), where the rest of the restore does not.
 * - `background`: the guest starts at once; the same check runs next to it and, on damage, the
 *   VM is paused and its QEMU stopped, and `onDamage` hears why. The guest may have read a
 *   damaged page before that: detection is bounded (one pass over the file), not prevention.
 * - `off`: no check (for measurement only: it is what a Firecracker user gets).
 *
 * Measured (test/integration/mmap-restore.test.ts, TCG, 2 cores, page cache of the snapshot
 * dropped before each restore, median of 3; ms from QEMU's spawn):
 *
 *   VM       strategy               ready   cont  first answer  read before start
 *   192 MiB  full                    1595   1603          1692          125.3 MiB
 *            mmap off                 137    160           353            0.6 MiB
 *            mmap before-start        332    337           410          125.3 MiB  check 317, cont waited 171
 *            mmap background          135    143           357            0.6 MiB  check 306 (one run) next to it
 *   512 MiB  full                    2298   2300          2401          130.3 MiB
 *            mmap off                 234    250           412            0.6 MiB
 *            mmap before-start       1284   1295          1362          129.6 MiB  check 1250, cont waited 1044
 *            mmap background          191    220           398            0.6 MiB
 *
 * The check reads the whole logical image, holes included (the store's verify), so it grows with
 * the RAM size, not only with the stored bytes: 512 MiB with 130 MiB stored takes 1.1-1.2 s cold,
 * 0.4 s warm, on its own. After it the guest faults hit the page cache, which is why its first
 * answer comes ~70 ms after `cont` instead of ~190 ms: the check buys part of its cost back.
 */
export type MmapVerify = "before-start" | "background" | "off";

export type VerifyOutcome =
  { status: "intact"; ms: number } | { status: "damaged" | "failed"; ms: number; error: HrError };

export const DAMAGE_HINT =
  "the snapshot is damaged; run `hotrestore snapshot verify` for the full list, or take a new snapshot";

/** Checks every chunk of every block of one VM's memory. Never throws. */
export async function verifyMemory(memory: VmMemoryReader): Promise<VerifyOutcome> {
  const started = performance.now();
  const ms = (): number => Math.round(performance.now() - started);
  try {
    const damages = await memory.verify();
    if (damages.length === 0) return { status: "intact", ms: ms() };
    const list = damages.map((damage) => `${damage.file}: ${damage.problem}`).join("; ");
    const error = new HrError("SNAPSHOT_CORRUPT", `VM ${memory.vm}: damaged memory image: ${list}`, {
      hint: DAMAGE_HINT,
    });
    return { status: "damaged", ms: ms(), error };
  } catch (error) {
    const wrapped =
      error instanceof HrError
        ? error
        : new HrError(
            "RESTORE_VERIFY_FAILED",
            `VM ${memory.vm}: checking its memory image failed: ${messageOf(error)}`,
            { cause: error },
          );
    return { status: wrapped.code === "SNAPSHOT_CORRUPT" ? "damaged" : "failed", ms: ms(), error: wrapped };
  }
}

export type BackgroundVerdict = VerifyOutcome | { status: "cancelled"; ms: number };

export interface BackgroundVerification {
  /** Settles once the check is over (and, on damage, the VM stopped). Never rejects. */
  readonly done: Promise<BackgroundVerdict>;
  /** The caller stopped the VM itself: a later result changes nothing. */
  cancel(): void;
}

/**
 * Runs the check next to the running guest. On damage, or when the check cannot finish (the
 * snapshot became unreadable: fail closed), the VM is paused at once, then its QEMU is stopped,
 * then `onDamage` is called. Keep `memory` open until `done` settles.
 */
export function verifyInBackground(
  vm: Vm,
  memory: VmMemoryReader,
  onDamage: ((error: HrError) => void) | undefined,
): BackgroundVerification {
  let cancelled = false;
  const done = (async (): Promise<BackgroundVerdict> => {
    const outcome = await verifyMemory(memory);
    if (cancelled) return { status: "cancelled", ms: outcome.ms };
    if (outcome.status === "intact") return outcome;
    const error = new HrError(
      outcome.error.code,
      `${outcome.error.message}; VM ${vm.spec.name} was stopped (its guest ran on that memory)`,
      { cause: outcome.error, hint: outcome.error.hint ?? DAMAGE_HINT },
    );
    await stopGuest(vm);
    try {
      onDamage?.(error);
    } catch {
      // the listener's failure must not hide the verdict
    }
    return { ...outcome, error };
  })();
  return {
    done,
    cancel: () => {
      cancelled = true;
    },
  };
}

/** Pauses the vCPUs first (fast), then stops QEMU. Never throws. */
export async function stopGuest(vm: Vm): Promise<void> {
  try {
    await vm.qmp.execute("stop", undefined, { timeoutMs: 2_000 });
  } catch {
    // no QMP connection, or QEMU already gone: stopping it below is all that is left
  }
  await vm.stop();
}
