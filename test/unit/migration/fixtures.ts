/**
 * Synthetic QEMU 7.2 streams for the migration tests, and helpers that feed a reader in chunks.
 * The device sections are made up but well formed: FULL header, payload whose size matches the
 * VMDESCRIPTION built alongside, footer.
 */
import { createHash } from "node:crypto";
import { encodeConfiguration } from "../../../src/migration/configuration.ts";
import {
  encodeEof,
  encodeFooter,
  encodeHeader,
  encodeRamSection,
  encodeRamStart,
  encodeVmdesc,
} from "../../../src/migration/encode.ts";
import { Section } from "../../../src/migration/format.ts";
import { MigrationStreamReader, type ReaderOptions } from "../../../src/migration/reader.ts";
import type { MigrationEvent, PageRecord, RamBlockInfo, Vmdesc } from "../../../src/migration/types.ts";

export const RAM_SECTION_ID = 2;

/** A deterministic pseudo-random generator (mulberry32), so failures reproduce. */
export function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function pageData(seed: number): Buffer {
  const random = prng(seed);
  const data = Buffer.alloc(4096);
  for (let i = 0; i < data.length; i += 1) data[i] = Math.floor(random() * 256);
  return data;
}

export interface DeviceSpec {
  name: string;
  instanceId: number;
  fieldSizes: number[];
  subsections?: { name: string; fieldSizes: number[] }[];
}

export const DEVICES: DeviceSpec[] = [
  { name: "timer", instanceId: 0, fieldSizes: [8, 8, 8] },
  { name: "cpu", instanceId: 0, fieldSizes: [8, 4], subsections: [{ name: "cpu/xsave", fieldSizes: [16] }] },
  { name: "0000:00:03.0/virtio-net", instanceId: 0, fieldSizes: [40] },
  { name: "globalstate", instanceId: 0, fieldSizes: [4, 100] },
];

/** FULL sections for `devices` (ids from firstSectionId) and the VMDESCRIPTION describing them. */
/** The VMDESCRIPTION entry QEMU writes for a device of this shape. */
export function vmdescDevice(device: DeviceSpec): Vmdesc["devices"][number] {
  return {
    name: device.name,
    instance_id: device.instanceId,
    vmsd_name: device.name,
    version: 1,
    fields: device.fieldSizes.map((size, i) => ({ name: `f${i}`, type: "buffer", size })),
    subsections: (device.subsections ?? []).map((sub) => ({
      vmsd_name: sub.name,
      version: 1,
      fields: sub.fieldSizes.map((size, i) => ({ name: `s${i}`, type: "buffer", size })),
    })),
  };
}

export function deviceState(devices = DEVICES, firstSectionId = 3): { raw: Buffer; vmdesc: Vmdesc } {
  const parts: Buffer[] = [];
  const vmdesc: Vmdesc = { page_size: 4096, devices: [] };
  devices.forEach((device, index) => {
    const sectionId = firstSectionId + index;
    const name = Buffer.from(device.name, "latin1");
    const head = Buffer.alloc(5 + 1 + name.length + 8);
    head[0] = Section.FULL;
    head.writeUInt32BE(sectionId, 1);
    head[5] = name.length;
    name.copy(head, 6);
    head.writeUInt32BE(device.instanceId, 6 + name.length);
    head.writeUInt32BE(1, 10 + name.length);
    parts.push(head);
    for (const size of device.fieldSizes) parts.push(Buffer.alloc(size, 0xa5));
    for (const sub of device.subsections ?? []) {
      const subName = Buffer.from(sub.name, "latin1");
      parts.push(Buffer.from([Section.SUBSECTION, subName.length]), subName, Buffer.from([0, 0, 0, 1]));
      for (const size of sub.fieldSizes) parts.push(Buffer.alloc(size, 0x5a));
    }
    parts.push(encodeFooter(sectionId));
    vmdesc.devices.push(vmdescDevice(device));
  });
  return { raw: Buffer.concat(parts), vmdesc };
}

export const BLOCKS: RamBlockInfo[] = [
  { id: "pc.ram", usedLength: 16 * 4096 },
  { id: "/rom@etc/acpi/tables", usedLength: 2 * 4096 },
];

export const CONFIGURATION = encodeConfiguration({ machine: "pc-i440fx-7.2", capabilities: [] });

/** Pages touching every block, mixing data and zero pages, block changes and runs. */
export function samplePages(count = 12, seed = 1): PageRecord[] {
  const pages: PageRecord[] = [];
  for (let i = 0; i < count; i += 1) {
    const block = i % 5 === 4 ? BLOCKS[1]! : BLOCKS[0]!;
    const offset = ((i * 7) % (block.usedLength / 4096)) * 4096;
    pages.push(
      i % 3 === 1
        ? { block: block.id, offset, zero: true }
        : { block: block.id, offset, data: pageData(seed + i) },
    );
  }
  return pages;
}

export interface StreamParts {
  pages?: PageRecord[];
  pagesPerPart?: number;
  withEnd?: boolean;
  withVmdesc?: boolean;
  between?: Buffer[];
  blocks?: RamBlockInfo[];
  configuration?: Buffer;
}

/** A precopy stream (or, withEnd false, a background-snapshot one), built from the encoders. */
export function buildStream(parts: StreamParts = {}): Buffer {
  const pages = parts.pages ?? samplePages();
  const perPart = parts.pagesPerPart ?? 5;
  const state = deviceState();
  const out = [encodeHeader(), parts.configuration ?? CONFIGURATION];
  out.push(encodeRamStart({ sectionId: RAM_SECTION_ID, blocks: parts.blocks ?? BLOCKS }));
  for (let i = 0; i < pages.length; i += perPart) {
    out.push(encodeRamSection("part", RAM_SECTION_ID, pages.slice(i, i + perPart)));
  }
  out.push(...(parts.between ?? []));
  if (parts.withEnd ?? true) out.push(encodeRamSection("end", RAM_SECTION_ID, []));
  out.push(state.raw, encodeEof());
  if (parts.withVmdesc ?? true) out.push(encodeVmdesc(state.vmdesc));
  return Buffer.concat(out);
}

export function readAll(chunks: Iterable<Buffer>, options?: ReaderOptions): MigrationEvent[] {
  const reader = new MigrationStreamReader(options);
  const events: MigrationEvent[] = [];
  for (const chunk of chunks) events.push(...reader.push(chunk));
  events.push(...reader.end());
  return events;
}

export function splitAt(bytes: Buffer, at: number): Buffer[] {
  return [bytes.subarray(0, at), bytes.subarray(at)];
}

export function randomChunks(bytes: Buffer, seed: number, maxChunk: number): Buffer[] {
  const random = prng(seed);
  const chunks: Buffer[] = [];
  for (let pos = 0; pos < bytes.length;) {
    const size = 1 + Math.floor(random() * maxChunk);
    chunks.push(Buffer.from(bytes.subarray(pos, pos + size)));
    pos += size;
  }
  return chunks;
}

/** A comparable summary: buffers replaced by their length and SHA-1 (cheap to deep-compare). */
export function summarize(events: MigrationEvent[]): unknown[] {
  return events.map((event) => {
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(event))
      out[key] = Buffer.isBuffer(value) ? digest(value) : value;
    return out;
  });
}

function digest(bytes: Buffer): string {
  return `${bytes.length}:${createHash("sha1").update(bytes).digest("hex")}`;
}

/**
 * The first bytes of a stream written by QEMU 7.2.22 on this machine (`-m 64 -S`, stopped,
 * x-ignore-shared on, one memory-backend-file): header, configuration with the capabilities
 * subsection, and the ram START section up to its first block (the rest of the list follows).
 */
export const REAL_PREFIX = Buffer.from(
  "5145564d00000003" +
    "070000000d" +
    Buffer.from("pc-i440fx-7.2").toString("hex") +
    "051a" +
    Buffer.from("configuration/capabilities").toString("hex") +
    "00000001" +
    "00000001" +
    "0f" +
    Buffer.from("x-ignore-shared").toString("hex") +
    "0100000002037261" +
    "6d0000000000000004" +
    "0000000004082004" +
    "036d656d" +
    "0000000004000000" +
    "0000000000000000",
  "hex",
);
