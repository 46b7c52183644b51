/**
 * The snapshot store's public surface. Layout on disk: layout.ts; file formats: manifest.ts,
 * memory-index.ts, working-set-file.ts, inflight-file.ts (envelope: sealed.ts).
 */
export { SnapshotStore, type SnapshotListEntry, type StoreOptions } from "./store.ts";
export { SnapshotBuilder, type PauseFigures } from "./builder.ts";
export { VmSnapshotWriter } from "./vm-writer.ts";
export type { BlockSpec } from "./memory-writer.ts";
export { SnapshotReader, type WorkingSetWithCopies } from "./reader.ts";
export { VmMemoryReader, type StoredPage } from "./memory-reader.ts";
export type { SnapshotSummary, VmSummary } from "./summary.ts";
export type { Damage, VerifyReport } from "./verify.ts";
export type { InflightFrame } from "./inflight-file.ts";
export type { WorkingSetEntry } from "./working-set-file.ts";
export type { JsonValue, Manifest, ManifestVm, ManifestBlock } from "./manifest.ts";
export type { SnapshotStoreErrorCode } from "./errors.ts";
export { checkSnapshotName, CHUNK_PAGES, PAGE_SIZE, SNAPSHOT_NAME_RE } from "./layout.ts";
export { readCheckedRange, readCheckedSpanSync, RANGE_CHUNKS } from "./raw-image.ts";
export { chunkCount } from "./memory-index.ts";
