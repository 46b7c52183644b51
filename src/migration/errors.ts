import { HrError } from "../util/errors.ts";
import type { MigrationErrorCode } from "./format.ts";

/**
 * The migration family of HrError codes (see MigrationErrorCode in format.ts):
 *   MIGRATION_BAD_STREAM   bytes that are not a QEMU 7.2 stream (bad magic, unknown type, bad footer)
 *   MIGRATION_TRUNCATED    the stream ended in the middle of something
 *   MIGRATION_UNSUPPORTED  a valid stream using a feature we do not handle (names the capability)
 *   MIGRATION_TOO_LARGE    a length beyond our limits (checked before allocating)
 *   MIGRATION_BAD_INPUT    the writer was given data it cannot encode
 *   MIGRATION_WRITE_FAILED the writer's sink failed
 */
export function migrationError(
  code: MigrationErrorCode,
  message: string,
  options: { cause?: unknown; hint?: string } = {},
): HrError {
  return new HrError(code, message, options);
}

export function badStream(offset: number, what: string): HrError {
  return migrationError("MIGRATION_BAD_STREAM", `bad migration stream at byte ${offset}: ${what}`, {
    hint: "is this a QEMU 7.2 migration stream (written by migrate exec:cat > FILE), and is it complete?",
  });
}

export function truncated(offset: number, what: string): HrError {
  return migrationError("MIGRATION_TRUNCATED", `migration stream ends at byte ${offset} inside ${what}`, {
    hint: "the file is incomplete: did the migration that wrote it complete?",
  });
}

export function tooLarge(offset: number, what: string, size: number, limit: number): HrError {
  return migrationError(
    "MIGRATION_TOO_LARGE",
    `migration stream at byte ${offset}: ${what} of ${size} bytes exceeds the limit of ${limit}`,
  );
}

export function unsupported(offset: number, what: string, hint: string): HrError {
  return migrationError("MIGRATION_UNSUPPORTED", `migration stream at byte ${offset}: ${what}`, { hint });
}

export function hex(value: number): string {
  return `0x${value.toString(16)}`;
}
