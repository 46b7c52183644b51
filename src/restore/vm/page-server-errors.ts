import { HrError, messageOf } from "../../util/errors.ts";

/**
 * The page server's error codes (a damaged page keeps the store's SNAPSHOT_CORRUPT, with the VM
 * and file named):
 *   PAGE_SERVER_CLOSED       the destination closed the connection before the end
 *   PAGE_SERVER_STALLED      no progress (nothing read or drained) for the stall timeout
 *   PAGE_SERVER_TIMEOUT      not prepared / not done within its time limit
 *   PAGE_SERVER_PROTOCOL     the return path said something we cannot accept
 *   PAGE_SERVER_DEST_FAILED  the destination reported an error (SHUT with a non-zero code)
 *   PAGE_SERVER_ABORTED      the caller aborted the restore
 *   PAGE_SERVER_BAD_INPUT    a page list or block list we cannot use
 *   PAGE_SERVER_INTERNAL     a bug (a page written twice, a page never written)
 */
export type PageServerErrorCode =
  | "PAGE_SERVER_CLOSED"
  | "PAGE_SERVER_STALLED"
  | "PAGE_SERVER_TIMEOUT"
  | "PAGE_SERVER_PROTOCOL"
  | "PAGE_SERVER_DEST_FAILED"
  | "PAGE_SERVER_ABORTED"
  | "PAGE_SERVER_BAD_INPUT"
  | "PAGE_SERVER_INTERNAL";

export function pageServerError(
  code: PageServerErrorCode,
  vm: string,
  what: string,
  options: { cause?: unknown; hint?: string } = {},
): HrError {
  return new HrError(code, `VM ${vm}: page server: ${what}`, options);
}

/** Every error leaving the server names the VM; HrError codes are kept. */
export function namedPageServerError(vm: string, error: unknown): HrError {
  if (error instanceof HrError && error.message.startsWith(`VM ${vm}:`)) return error;
  if (error instanceof HrError) {
    return new HrError(error.code, `VM ${vm}: page server: ${error.message}`, {
      cause: error,
      hint: error.hint,
    });
  }
  return pageServerError("PAGE_SERVER_INTERNAL", vm, messageOf(error), { cause: error });
}
