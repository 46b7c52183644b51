import type { MigrationStatus } from "./types.ts";

/**
 * The commands HotRestore issues, checked against QEMU 7.2's `query-qmp-schema`.
 * `args: undefined` means the command takes none; `| undefined` means every argument is optional.
 * Anything not listed goes through `QmpClient.executeRaw`.
 */
export interface QmpCommandMap {
  qmp_capabilities: { args: { enable?: "oob"[] } | undefined; result: Empty };
  "query-status": { args: undefined; result: StatusInfo };
  stop: { args: undefined; result: Empty };
  cont: { args: undefined; result: Empty };
  quit: { args: undefined; result: Empty };
  system_powerdown: { args: undefined; result: Empty };
  "query-migrate": { args: undefined; result: MigrationInfo };
  migrate: { args: MigrateArgs; result: Empty };
  "migrate-incoming": { args: { uri: string }; result: Empty };
  "migrate-set-capabilities": {
    args: { capabilities: { capability: MigrationCapability; state: boolean }[] };
    result: Empty;
  };
  "migrate-set-parameters": { args: MigrateSetParameters | undefined; result: Empty };
  "query-name": { args: undefined; result: { name?: string } };
  "human-monitor-command": { args: { "command-line": string; "cpu-index"?: number }; result: string };
  "announce-self": { args: AnnounceParameters; result: Empty };
  "blockdev-snapshot-sync": { args: BlockdevSnapshotSyncArgs; result: Empty };
  "query-block": { args: undefined; result: BlockInfo[] };
  "qom-get": { args: { path: string; property: string }; result: unknown };
}

export type QmpCommandName = keyof QmpCommandMap;
export type QmpCommandArgs<K extends QmpCommandName> = QmpCommandMap[K]["args"];
export type QmpCommandResult<K extends QmpCommandName> = QmpCommandMap[K]["result"];

/** `{}` on the wire. */
export type Empty = Record<string, never>;

export type RunState =
  | "debug"
  | "inmigrate"
  | "internal-error"
  | "io-error"
  | "paused"
  | "postmigrate"
  | "prelaunch"
  | "finish-migrate"
  | "restore-vm"
  | "running"
  | "save-vm"
  | "shutdown"
  | "suspended"
  | "watchdog"
  | "guest-panicked"
  | "colo";

export interface StatusInfo {
  running: boolean;
  singlestep: boolean;
  status: RunState;
}

export interface MigrationStats {
  transferred: number;
  remaining: number;
  total: number;
  duplicate: number;
  skipped: number;
  normal: number;
  "normal-bytes": number;
  "dirty-pages-rate": number;
  mbps: number;
  "dirty-sync-count": number;
  "postcopy-requests": number;
  "page-size": number;
  "multifd-bytes": number;
  "pages-per-second": number;
  "precopy-bytes": number;
  "downtime-bytes": number;
  "postcopy-bytes": number;
  "dirty-sync-missed-zero-copy": number;
}

/** Only `status` and the members we read are listed; QEMU sends more (xbzrle, compression, ...). */
export interface MigrationInfo {
  status?: MigrationStatus;
  ram?: MigrationStats;
  "total-time"?: number;
  "expected-downtime"?: number;
  downtime?: number;
  "setup-time"?: number;
  "error-desc"?: string;
  "blocked-reasons"?: string[];
}

export interface MigrateArgs {
  uri: string;
  blk?: boolean;
  inc?: boolean;
  detach?: boolean;
  resume?: boolean;
}

export type MigrationCapability =
  | "xbzrle"
  | "rdma-pin-all"
  | "auto-converge"
  | "zero-blocks"
  | "compress"
  | "events"
  | "postcopy-ram"
  | "x-colo"
  | "release-ram"
  | "block"
  | "return-path"
  | "pause-before-switchover"
  | "multifd"
  | "dirty-bitmaps"
  | "postcopy-blocktime"
  | "late-block-activate"
  | "x-ignore-shared"
  | "validate-uuid"
  | "background-snapshot"
  | "zero-copy-send"
  | "postcopy-preempt";

/** The subset of MigrateSetParameters we may tune; all optional. */
export interface MigrateSetParameters {
  "announce-initial"?: number;
  "announce-max"?: number;
  "announce-rounds"?: number;
  "announce-step"?: number;
  "max-bandwidth"?: number;
  "downtime-limit"?: number;
  "multifd-channels"?: number;
  "xbzrle-cache-size"?: number;
  "max-postcopy-bandwidth"?: number;
  "multifd-compression"?: "none" | "zlib" | "zstd";
}

/** In 7.2 `initial`, `max`, `rounds` and `step` are all required (milliseconds, count). */
export interface AnnounceParameters {
  initial: number;
  max: number;
  rounds: number;
  step: number;
  interfaces?: string[];
  id?: string;
}

export interface BlockdevSnapshotSyncArgs {
  device?: string;
  "node-name"?: string;
  "snapshot-file": string;
  "snapshot-node-name"?: string;
  format?: string;
  mode?: "existing" | "absolute-paths";
}

/** The members of BlockInfo we read; `inserted` carries many more (throttling, cache, ...). */
export interface BlockInfo {
  device: string;
  qdev?: string;
  type: string;
  removable: boolean;
  locked: boolean;
  tray_open?: boolean;
  "io-status"?: "ok" | "failed" | "nospace";
  inserted?: { file: string; "node-name"?: string; ro: boolean; drv: string; backing_file?: string };
}
