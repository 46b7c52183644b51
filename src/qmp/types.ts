/**
 * Shapes of the QMP messages QEMU 7.2 sends, and the events we react to.
 * These describe the wire; framing.ts checks the envelope (greeting / return / error / event) and
 * trusts QEMU's schema for the payload inside it. Command payloads live in commands.ts.
 */
export type * from "./commands.ts";

export interface QmpVersion {
  qemu: { major: number; minor: number; micro: number };
  /** Distribution build string, e.g. "Debian 1:7.2+dfsg-7+deb12u18+b3". */
  package: string;
}

/** `{"QMP": {"version": {...}, "capabilities": ["oob"]}}`, sent once right after connect. */
export interface QmpGreeting {
  QMP: { version: QmpVersion; capabilities: string[] };
}

/** The `error` member of a failed reply. */
export interface QmpErrorBody {
  class: string;
  desc: string;
}

export interface QmpTimestamp {
  seconds: number;
  microseconds: number;
}

export type ShutdownCause =
  | "none"
  | "host-error"
  | "host-qmp-quit"
  | "host-qmp-system-reset"
  | "host-signal"
  | "host-ui"
  | "guest-shutdown"
  | "guest-reset"
  | "guest-panic"
  | "subsystem-reset"
  | "snapshot-load";

export type MigrationStatus =
  | "none"
  | "setup"
  | "cancelling"
  | "cancelled"
  | "active"
  | "postcopy-active"
  | "postcopy-paused"
  | "postcopy-recover"
  | "completed"
  | "failed"
  | "colo"
  | "pre-switchover"
  | "device"
  | "wait-unplug";

/** `data` of the events we use; events without data (STOP, RESUME, POWERDOWN) have none on the wire. */
export interface QmpEventMap {
  STOP: undefined;
  RESUME: undefined;
  POWERDOWN: undefined;
  SHUTDOWN: { guest: boolean; reason: ShutdownCause };
  RESET: { guest: boolean; reason: ShutdownCause };
  MIGRATION: { status: MigrationStatus };
  MIGRATION_PASS: { pass: number };
}

/** Any event name, with the known ones offered first by editors. */
export type QmpEventName = keyof QmpEventMap | (string & {});

export type QmpEventData<N extends string> = N extends keyof QmpEventMap
  ? QmpEventMap[N]
  : Record<string, unknown> | undefined;

/** `{"event": "STOP", "data": {...}, "timestamp": {"seconds": ..., "microseconds": ...}}` */
export interface QmpEvent<N extends string = string> {
  event: N;
  data: QmpEventData<N>;
  timestamp: QmpTimestamp;
}

/** What the client writes: `{"execute": ..., "arguments": ..., "id": ...}`. */
export interface QmpCommandMessage {
  execute: string;
  arguments?: object | undefined;
  id: number | string;
}

/** One decoded server message, tagged by envelope. `id` is echoed verbatim by QEMU (absent if none). */
export type QmpServerMessage =
  | { kind: "greeting"; greeting: QmpGreeting }
  | { kind: "return"; id: unknown; value: unknown }
  | { kind: "error"; id: unknown; error: QmpErrorBody }
  | { kind: "event"; event: QmpEvent };
