/**
 * What the stream reader emits and the writer takes. Byte layouts are described in format.ts.
 */

export interface RamBlockInfo {
  /** RAMBlock idstr, e.g. "pc.ram", "0000:00:02.0/vga.vram", "/rom@etc/acpi/tables". */
  id: string;
  usedLength: number;
  /** Present iff postcopy-ram was on and the block's page size differs from the host's. */
  pageSize?: number;
  /** Guest physical address, present iff x-ignore-shared was on. */
  gpa?: number;
}

export interface ConfigurationInfo {
  machine: string;
  /** Only present when the source sent the target-page-bits subsection. */
  targetPageBits?: number;
  /** Validated capabilities that were on at the source (7.2: only "x-ignore-shared"). */
  capabilities: string[];
  /** Only present with validate-uuid. */
  uuid?: Buffer;
}

export interface HeaderEvent {
  type: "header";
  version: number;
}

export interface ConfigurationEvent extends ConfigurationInfo {
  type: "configuration";
  /** The whole CONFIGURATION bytes, type byte and subsections included, verbatim. */
  raw: Buffer;
}

export interface RamStart {
  sectionId: number;
  instanceId: number;
  version: number;
  /** Sum of every block's usedLength (the MEM_SIZE record). */
  totalBytes: number;
  blocks: RamBlockInfo[];
}

/** The ram SECTION_START, emitted at its footer. */
export interface RamBlocksEvent extends RamStart {
  type: "ramBlocks";
  /** The whole START section, footer included, verbatim. */
  raw: Buffer;
}

export interface PageEvent {
  type: "page";
  block: string;
  /** Byte offset within the block (a multiple of 4096). */
  offset: number;
  kind: "zero" | "data";
  /** kind "data": the 4096 bytes (a copy, owned by the receiver). */
  data?: Buffer;
  /** kind "zero": the byte the page is filled with (QEMU 7.2 always sends 0). */
  fill: number;
}

/** Emitted at the footer of each ram SECTION_PART / SECTION_END. */
export interface RamSectionEvent {
  type: "ramSection";
  kind: "part" | "end";
  sectionId: number;
  /** Page records in this section (data and zero). */
  pages: number;
}

/** Any 0x08 command except PACKAGED. */
export interface CommandEvent {
  type: "command";
  cmd: number;
  data: Buffer;
}

/**
 * A PACKAGED command: `data` is the embedded stream (no header: LISTEN, device FULL sections,
 * PING, RUN in a post-copy stream). Not parsed further: its FULL sections cannot be delimited
 * without the devices' VMSDs and no VMDESCRIPTION follows them.
 */
export interface PackagedEvent {
  type: "packaged";
  data: Buffer;
}

/** Every byte from the first SECTION_FULL up to (excluding) the EOF byte, verbatim. */
export interface DeviceStateEvent {
  type: "deviceState";
  raw: Buffer;
}

export interface EofEvent {
  type: "eof";
}

export interface VmdescEvent {
  type: "vmdesc";
  json: Vmdesc;
  /** The JSON text exactly as QEMU wrote it. */
  raw: Buffer;
}

export type MigrationEvent =
  | HeaderEvent
  | ConfigurationEvent
  | RamBlocksEvent
  | PageEvent
  | RamSectionEvent
  | CommandEvent
  | PackagedEvent
  | DeviceStateEvent
  | EofEvent
  | VmdescEvent;

/** QEMU's VMDESCRIPTION JSON (only the members we read are typed). */
export interface Vmdesc {
  page_size?: number;
  devices: VmdescDevice[];
}

export interface VmdescDevice {
  name: string;
  instance_id: number;
  vmsd_name?: string;
  version?: number;
  fields?: VmdescField[];
  subsections?: VmdescSubsection[];
}

export interface VmdescField {
  name: string;
  type?: string;
  size: number;
  array_len?: number;
}

export interface VmdescSubsection {
  vmsd_name: string;
  version?: number;
  fields?: VmdescField[];
  subsections?: VmdescSubsection[];
}

/** A page for the writer: `data` (4096 bytes) or `zero: true`. */
export interface PageRecord {
  block: string;
  offset: number;
  data?: Buffer;
  zero?: boolean;
  /** Fill byte of a zero page; 0 unless you know better. */
  fill?: number;
}
