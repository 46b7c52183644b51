import { HrError } from "../util/errors.ts";

/**
 * Error codes of the QMP client. Callers match on these, never on messages.
 * - QMP_CONNECT_FAILED: the socket could not be reached before the retry window ran out.
 * - QMP_PROTOCOL: QEMU sent something that is not QMP (bad JSON, unknown shape, oversized line).
 * - QMP_ENCODE: a command's arguments cannot be written as JSON (a caller bug, e.g. a bigint).
 * - QMP_COMMAND_FAILED: QEMU answered a command with `{"error": {class, desc}}`; see QmpCommandError.
 * - QMP_TIMEOUT: no greeting, reply or awaited event within the time allowed.
 * - QMP_CLOSED: the connection is gone (peer closed, socket error, protocol error, or close()).
 */
export type QmpErrorCode =
  "QMP_CONNECT_FAILED" | "QMP_PROTOCOL" | "QMP_ENCODE" | "QMP_COMMAND_FAILED" | "QMP_TIMEOUT" | "QMP_CLOSED";

export function qmpError(
  code: QmpErrorCode,
  message: string,
  options: { cause?: unknown; hint?: string } = {},
): HrError {
  return new HrError(code, message, options);
}

/**
 * QEMU refused a command. `qmpClass` keeps QEMU's error class ("GenericError", "CommandNotFound",
 * "DeviceNotFound", ...) so callers can tell "no such device" from "bad state" without parsing text.
 * It is an HrError with code QMP_COMMAND_FAILED, not a separate family.
 */
export class QmpCommandError extends HrError {
  readonly command: string;
  readonly qmpClass: string;
  readonly desc: string;

  constructor(command: string, error: { class: string; desc: string }) {
    super("QMP_COMMAND_FAILED", `${command}: ${error.desc}`);
    this.name = "QmpCommandError";
    this.command = command;
    this.qmpClass = error.class;
    this.desc = error.desc;
  }
}
