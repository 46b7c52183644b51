/**
 * QEMU 7.2 migration streams: reader, writer, encoders, return path. Layout: format.ts.
 */
export * from "./commands.ts";
export { encodeConfiguration, parseConfiguration } from "./configuration.ts";
export { splitDeviceSections, type DeviceSection } from "./device-sections.ts";
export * from "./encode.ts";
export * from "./format.ts";
export { MigrationStreamReader, type ReaderOptions } from "./reader.ts";
export * from "./return-path.ts";
export type * from "./types.ts";
export {
  writePrecopyStream,
  SinkWriter,
  DEFAULT_MAX_PAGES_PER_PART,
  type PrecopyStreamInput,
  type WriteStats,
} from "./writer.ts";
