/**
 * Errors of a cluster snapshot (cut.ts): every one names the snapshot, and the VM and step when
 * one VM failed. When several VMs fail, the cause is reported, not its echoes: a store error
 * (SNAPSHOT_DISK_FULL, SNAPSHOT_IO) aborts the whole snapshot, after which every other VM's
 * writer only finds its image closed (SNAPSHOT_CLOSED).
 */
import { HrError, isHrError, messageOf } from "../util/errors.ts";

/** `work`'s failure as `VM <vm>: <step>: ...` (kept as it is when it names the VM already). */
export async function atVm<T>(vm: string, step: string, work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    const message = messageOf(error);
    if (message.startsWith(`VM ${vm}`) && isHrError(error)) throw error;
    throw new HrError(isHrError(error) ? error.code : "SNAPSHOT_FAILED", `VM ${vm}: ${step}: ${message}`, {
      cause: error,
      hint: isHrError(error) && error.hint !== undefined ? error.hint : "see the VM's qemu.log",
    });
  }
}

function isEcho(error: unknown): boolean {
  return isHrError(error, "SNAPSHOT_CLOSED");
}

/** The error to report: `first`, unless it only echoes another one among `others`. */
export function rootCause(first: unknown, others: readonly unknown[]): unknown {
  if (!isEcho(first)) return first;
  return others.find((error) => error !== undefined && !isEcho(error)) ?? first;
}

export function snapshotFailed(name: string, error: unknown): HrError {
  const hint = isHrError(error) && error.hint !== undefined ? error.hint : undefined;
  return new HrError(
    isHrError(error) ? error.code : "SNAPSHOT_FAILED",
    `snapshot ${name} failed: ${messageOf(error)}`,
    {
      cause: error,
      hint: hint ?? "the cluster runs on and earlier snapshots are untouched; see the daemon log",
    },
  );
}
