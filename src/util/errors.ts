/**
 * One base error for the whole project. Callers match on `code` (stable, SCREAMING_SNAKE),
 * never on the message. `hint` says what the user can do next; `cause` keeps the underlying error.
 * Each concern defines its own family of codes (see the `code` unions next to each module).
 */
export class HrError extends Error {
  readonly code: string;
  readonly hint: string | undefined;

  constructor(code: string, message: string, options: { cause?: unknown; hint?: string } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "HrError";
    this.code = code;
    this.hint = options.hint;
  }

  /** A plain object fit for JSON output and for crossing the control socket. */
  toJSON(): { code: string; message: string; hint?: string } {
    return this.hint === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, hint: this.hint };
  }
}

export function isHrError(value: unknown, code?: string): value is HrError {
  return value instanceof HrError && (code === undefined || value.code === code);
}

/** The message of anything thrown, for logs and wrapped errors. */
export function messageOf(value: unknown): string {
  return value instanceof Error ? value.message : String(value);
}
