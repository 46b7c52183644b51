import { HrError } from "../util/errors.ts";

/**
 * MAC addresses: text form "52:54:00:77:00:01" (lower case, colon separated) for people and JSON,
 * 48-bit integers (exact in a JS number) for fast table keys in the switch.
 */
export const MAC_LENGTH = 6;
export const BROADCAST_MAC = "ff:ff:ff:ff:ff:ff";

const MAC_PATTERN = /^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}$/;

/** The text form of the 6 bytes at `offset`. Throws RangeError if the buffer is too short. */
export function formatMac(buf: Uint8Array, offset = 0): string {
  if (offset < 0 || offset + MAC_LENGTH > buf.length) throw new RangeError("MAC address out of range");
  const parts: string[] = [];
  for (let i = 0; i < MAC_LENGTH; i++) parts.push((buf[offset + i] ?? 0).toString(16).padStart(2, "0"));
  return parts.join(":");
}

/** The 6 bytes of "52:54:00:77:00:01" (also accepts '-' separators), or undefined if malformed. */
export function tryParseMac(text: string): Buffer | undefined {
  if (!MAC_PATTERN.test(text)) return undefined;
  return Buffer.from(text.replace(/[:-]/g, ""), "hex");
}

/** Like tryParseMac, but throws HrError MAC_INVALID. */
export function parseMac(text: string): Buffer {
  const mac = tryParseMac(text);
  if (mac === undefined) {
    throw new HrError("MAC_INVALID", `not a MAC address: ${JSON.stringify(text)}`, {
      hint: 'write it as six hex pairs separated by colons, e.g. "52:54:00:77:00:01"',
    });
  }
  return mac;
}

/** The 48-bit integer value of the MAC at `offset` (a Map key). */
export function macKey(buf: Buffer, offset = 0): number {
  return buf.readUIntBE(offset, MAC_LENGTH);
}

/** The text form of a macKey value. */
export function macKeyToString(key: number): string {
  const buf = Buffer.alloc(MAC_LENGTH);
  buf.writeUIntBE(key, 0, MAC_LENGTH);
  return formatMac(buf);
}

/** Group bit (least significant bit of the first byte): broadcast and multicast. */
export function isGroupMac(buf: Uint8Array, offset = 0): boolean {
  return ((buf[offset] ?? 0) & 0x01) !== 0;
}
