/**
 * The end of a precopy or background-snapshot stream, from the first SECTION_FULL on:
 *
 *   FULL device sections … | 00 EOF | 06 be32 L | JSON[L]   (VMDESCRIPTION, optional)
 *
 * Device payloads are not length-prefixed, so the reader keeps this tail whole and cuts it from
 * the end: the last L bytes are JSON preceded by `06 be32 L` and the EOF byte. Without a
 * VMDESCRIPTION the tail simply ends with the EOF byte. Pure: no I/O.
 *
 * Limit: without a VMDESCRIPTION, "complete" only means "ends with 00 and the five bytes before
 * it look like a footer"; a stream cut at such a byte would pass. QEMU 7.2 always writes the
 * VMDESCRIPTION for precopy and background snapshots: check for the vmdesc event when you need
 * certainty (splitDeviceSections then validates every section).
 */
import { badStream, tooLarge, truncated } from "./errors.ts";
import { FOOTER_SIZE, Limits, Section } from "./format.ts";
import type { Vmdesc } from "./types.ts";

/** 06 + be32 length */
const VMDESC_HEADER_SIZE = 5;

export interface SplitTail {
  /** From the first FULL section up to (excluding) the EOF byte. */
  deviceState: Buffer;
  vmdesc?: { json: Vmdesc; raw: Buffer };
}

/** `at` is the stream offset of the tail's first byte (for error messages). */
export function splitTail(tail: Buffer, at: number): SplitTail {
  const end = tail.length;
  const lowest = Math.max(1, end - VMDESC_HEADER_SIZE - Limits.vmdescBytes);
  for (let p = end - VMDESC_HEADER_SIZE; p >= lowest; p -= 1) {
    if (tail[p] !== Section.VMDESCRIPTION || tail[p - 1] !== Section.EOF) continue;
    if (tail.readUInt32BE(p + 1) !== end - p - VMDESC_HEADER_SIZE) continue;
    const raw = Buffer.from(tail.subarray(p + VMDESC_HEADER_SIZE));
    return { deviceState: checkDeviceState(tail.subarray(0, p - 1), at), vmdesc: parseVmdesc(raw, at + p) };
  }
  if (end > 0 && tail[end - 1] === Section.EOF) {
    return { deviceState: checkDeviceState(tail.subarray(0, end - 1), at) };
  }
  if (end > Limits.deviceStateBytes + Limits.vmdescBytes) {
    throw tooLarge(at, "device state", end, Limits.deviceStateBytes);
  }
  throw truncated(at + end, "the device state (no EOF byte and no VMDESCRIPTION at the end)");
}

function checkDeviceState(deviceState: Buffer, at: number): Buffer {
  if (deviceState.length > Limits.deviceStateBytes) {
    throw tooLarge(at, "device state", deviceState.length, Limits.deviceStateBytes);
  }
  const footer = deviceState.length - FOOTER_SIZE;
  if (deviceState[0] !== Section.FULL || footer < 0 || deviceState[footer] !== Section.FOOTER) {
    throw truncated(at + deviceState.length, "the device state (it does not end with a section footer)");
  }
  return Buffer.from(deviceState);
}

/** Parses VMDESCRIPTION JSON text; `at` is its stream offset. */
export function parseVmdesc(raw: Buffer, at: number): { json: Vmdesc; raw: Buffer } {
  let json: unknown;
  try {
    json = JSON.parse(raw.toString("utf8"));
  } catch {
    throw badStream(at, "VMDESCRIPTION is not valid JSON");
  }
  if (typeof json !== "object" || json === null || !Array.isArray((json as Vmdesc).devices)) {
    throw badStream(at, "VMDESCRIPTION has no devices array");
  }
  return { json: json as Vmdesc, raw };
}
