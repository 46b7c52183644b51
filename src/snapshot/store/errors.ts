import { HrError, messageOf } from "../../util/errors.ts";

/**
 * Error codes of the snapshot store. Messages name the file (relative to the store root, e.g.
 * `before-upgrade/vms/db/device.bin`) and what is wrong with it.
 */
export type SnapshotStoreErrorCode =
  | "SNAPSHOT_BAD_NAME" // a snapshot name outside [a-z0-9][a-z0-9._-]{0,63}
  | "SNAPSHOT_EXISTS" // begin()/commit() of a name already taken
  | "SNAPSHOT_NOT_FOUND" // open()/verify()/remove() of a name that is not committed
  | "SNAPSHOT_CORRUPT" // a file is missing, has the wrong size, checksum or structure
  | "SNAPSHOT_VERSION_UNSUPPORTED" // written by a newer HotRestore
  | "SNAPSHOT_DISK_FULL" // ENOSPC/EDQUOT while writing; the partial snapshot was removed
  | "SNAPSHOT_IO" // any other file system error
  | "SNAPSHOT_BAD_INPUT" // builder misuse: unknown VM/block, unaligned offset, wrong page size
  | "SNAPSHOT_INCOMPLETE" // commit() without a VM's device state
  | "SNAPSHOT_CLOSED"; // a builder used after commit()/abort()

export function corrupt(file: string, problem: string, cause?: unknown): HrError {
  return new HrError("SNAPSHOT_CORRUPT", `${file}: ${problem}`, {
    cause,
    hint: "the snapshot is damaged; run `hotrestore snapshot verify` for the full list, or take a new snapshot",
  });
}

export function unsupportedVersion(file: string, found: number, supported: number): HrError {
  return new HrError(
    "SNAPSHOT_VERSION_UNSUPPORTED",
    `${file}: format version ${found} is newer than this HotRestore supports (${supported})`,
    { hint: "upgrade HotRestore to read this snapshot" },
  );
}

export function badInput(message: string): HrError {
  return new HrError("SNAPSHOT_BAD_INPUT", message);
}

function errnoCode(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null || !("code" in error)) return undefined;
  const code = error.code;
  return typeof code === "string" ? code : undefined;
}

export function isNotFound(error: unknown): boolean {
  return errnoCode(error) === "ENOENT";
}

/** Wraps a file system error raised while writing `file`; ENOSPC and EDQUOT become DISK_FULL. */
export function writeError(file: string, error: unknown): HrError {
  if (error instanceof HrError) return error;
  const code = errnoCode(error);
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new HrError("SNAPSHOT_DISK_FULL", `no space left on device while writing ${file}`, {
      cause: error,
      hint: "free space in the snapshot store (remove old snapshots) and try again",
    });
  }
  return new HrError("SNAPSHOT_IO", `writing ${file} failed: ${messageOf(error)}`, { cause: error });
}

/** Wraps a file system error raised while reading `file`: a missing file is damage, the rest is I/O. */
export function readError(file: string, error: unknown): HrError {
  if (error instanceof HrError) return error;
  if (isNotFound(error)) return corrupt(file, "missing", error);
  return new HrError("SNAPSHOT_IO", `reading ${file} failed: ${messageOf(error)}`, { cause: error });
}
