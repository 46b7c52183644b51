/**
 * Cuts a device state (DeviceStateEvent.raw: FULL sections back to back) into its sections, with
 * the help of the VMDESCRIPTION QEMU writes after EOF. Each FULL section is
 *
 *   04 be32 section_id, u8 n, idstr[n], be32 instance_id, be32 version_id, payload, 7e be32 section_id
 *
 * and VMDESCRIPTION lists the devices in the same order, each with its fields' sizes:
 *   payload = Σ field.size × (field.array_len ?? 1)
 *           + Σ over subsections (05 u8 n name[n] be32 version: 6 + n bytes, + its own payload)
 * When that arithmetic does not land on the footer (a field type whose size the JSON does not
 * tell exactly), the section is delimited by searching for its footer followed by the next
 * device's header. Pure: no I/O. Errors: HrError MIGRATION_BAD_STREAM.
 *
 * The VMDESCRIPTION is JSON from the stream, checked by the reader only for a `devices` array: its
 * shape (objects, names, field and subsection lists, nesting depth) is checked here before use.
 */
import { badStream } from "./errors.ts";
import { FOOTER_SIZE, SECTION_ID_HEADER_SIZE, SECTION_INSTANCE_VERSION_SIZE, Section } from "./format.ts";
import type { Vmdesc, VmdescField, VmdescSubsection } from "./types.ts";

export interface DeviceSection {
  idstr: string;
  instanceId: number;
  version: number;
  sectionId: number;
  /** Offset of the section's 0x04 byte in the device state. */
  offset: number;
  /** Whole section: header, payload and footer. */
  length: number;
  payloadOffset: number;
  payloadLength: number;
  /** true when the VMDESCRIPTION sizes gave the payload length exactly. */
  sizedByVmdesc: boolean;
}

/** 0x05 + u8 name length + be32 version */
const SUBSECTION_OVERHEAD = 6;
/** QEMU nests subsections a few levels deep; far deeper JSON would overflow the stack. */
const MAX_SUBSECTION_DEPTH = 32;

export function splitDeviceSections(raw: Buffer, vmdesc: Vmdesc): DeviceSection[] {
  vmdesc.devices.forEach((device: unknown, i) => checkDevice(device, i));
  const sections: DeviceSection[] = [];
  let pos = 0;
  const devices = vmdesc.devices;
  for (let i = 0; i < devices.length; i += 1) {
    const device = devices[i]!;
    const header = readHeader(raw, pos);
    if (header.idstr !== device.name || header.instanceId !== device.instance_id) {
      throw badStream(
        pos,
        `device section ${i} is ${header.idstr}/${header.instanceId}, VMDESCRIPTION says ${device.name}/${device.instance_id}`,
      );
    }
    const payloadOffset = pos + header.size;
    const expected = payloadOffset + payloadSize(device.fields, device.subsections);
    let end: number | undefined;
    let sizedByVmdesc = false;
    if (isFooter(raw, expected, header.sectionId)) {
      end = expected + FOOTER_SIZE;
      sizedByVmdesc = true;
    } else {
      end = findSectionEnd(raw, payloadOffset, header.sectionId, devices[i + 1]?.name);
    }
    if (end === undefined) throw badStream(pos, `cannot find the end of device section ${device.name}`);
    sections.push({
      idstr: header.idstr,
      instanceId: header.instanceId,
      version: header.version,
      sectionId: header.sectionId,
      offset: pos,
      length: end - pos,
      payloadOffset,
      payloadLength: end - FOOTER_SIZE - payloadOffset,
      sizedByVmdesc,
    });
    pos = end;
  }
  if (pos !== raw.length) {
    throw badStream(pos, `${raw.length - pos} bytes of device state beyond the VMDESCRIPTION's devices`);
  }
  return sections;
}

/** Throws MIGRATION_BAD_STREAM unless `device` has the shape VmdescDevice promises. */
function checkDevice(device: unknown, index: number): void {
  const bad: (why: string) => never = (why) => {
    throw badStream(0, `VMDESCRIPTION device ${index} is malformed: ${why}`);
  };
  if (!isObject(device)) bad("not an object");
  if (typeof device.name !== "string") bad("no name");
  if (typeof device.instance_id !== "number") bad("no instance_id");
  const checkLists = (holder: Record<string, unknown>, depth: number): void => {
    if (depth > MAX_SUBSECTION_DEPTH) bad(`subsections nested deeper than ${MAX_SUBSECTION_DEPTH}`);
    const { fields, subsections } = holder;
    if (fields !== undefined && !(Array.isArray(fields) && fields.every(isObject))) {
      bad("fields is not a list of objects");
    }
    if (subsections === undefined) return;
    if (!Array.isArray(subsections)) bad("subsections is not a list");
    for (const sub of subsections as unknown[]) {
      if (!isObject(sub) || typeof sub.vmsd_name !== "string") bad("a subsection without vmsd_name");
      checkLists(sub, depth + 1);
    }
  };
  checkLists(device, 0);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function readHeader(
  raw: Buffer,
  pos: number,
): { sectionId: number; idstr: string; instanceId: number; version: number; size: number } {
  if (raw[pos] !== Section.FULL || pos + SECTION_ID_HEADER_SIZE + 1 > raw.length) {
    throw badStream(pos, "expected a SECTION_FULL (0x04)");
  }
  const idLength = raw[pos + SECTION_ID_HEADER_SIZE]!;
  const idStart = pos + SECTION_ID_HEADER_SIZE + 1;
  const size = SECTION_ID_HEADER_SIZE + 1 + idLength + SECTION_INSTANCE_VERSION_SIZE;
  if (pos + size > raw.length) throw badStream(pos, "SECTION_FULL header is cut short");
  return {
    sectionId: raw.readUInt32BE(pos + 1),
    idstr: raw.toString("latin1", idStart, idStart + idLength),
    instanceId: raw.readUInt32BE(idStart + idLength),
    version: raw.readUInt32BE(idStart + idLength + 4),
    size,
  };
}

function payloadSize(fields: VmdescField[] | undefined, subsections: VmdescSubsection[] | undefined): number {
  let size = 0;
  for (const field of fields ?? []) size += field.size * (field.array_len ?? 1);
  for (const sub of subsections ?? []) {
    size +=
      SUBSECTION_OVERHEAD +
      Buffer.byteLength(sub.vmsd_name, "latin1") +
      payloadSize(sub.fields, sub.subsections);
  }
  return size;
}

function isFooter(raw: Buffer, at: number, sectionId: number): boolean {
  return (
    at + FOOTER_SIZE <= raw.length && raw[at] === Section.FOOTER && raw.readUInt32BE(at + 1) === sectionId
  );
}

/** The end of a section: its footer followed by the next device's header (or the end of raw). */
function findSectionEnd(
  raw: Buffer,
  from: number,
  sectionId: number,
  nextName: string | undefined,
): number | undefined {
  const footer = Buffer.alloc(FOOTER_SIZE);
  footer[0] = Section.FOOTER;
  footer.writeUInt32BE(sectionId, 1);
  if (nextName === undefined) {
    return isFooter(raw, raw.length - FOOTER_SIZE, sectionId) && raw.length - FOOTER_SIZE >= from
      ? raw.length
      : undefined;
  }
  const name = Buffer.from(nextName, "latin1");
  for (let at = raw.indexOf(footer, from); at >= 0; at = raw.indexOf(footer, at + 1)) {
    const next = at + FOOTER_SIZE;
    const idAt = next + SECTION_ID_HEADER_SIZE;
    if (
      raw[next] === Section.FULL &&
      raw[idAt] === name.length &&
      raw.subarray(idAt + 1, idAt + 1 + name.length).equals(name)
    ) {
      return next;
    }
  }
  return undefined;
}
