import { badInput, corrupt } from "./errors.ts";
import { seal, unseal } from "./sealed.ts";

/**
 * `vms/<vm>/workingset.bin`: the VM's working set, the pages it touches first after the cut,
 * in first-access order, and (version 2) a copy of the first pages' contents. Inside the
 * envelope of sealed.ts (magic "HRWS"):
 *
 *   offset      size      field
 *   0           4         entry count N, u32 LE
 *   4           N * 6     entries: block index u16 LE (into the manifest's block list of this VM),
 *                         page number u32 LE (within that block)
 *   version 2 only:
 *   4+6N        4         copy count K, u32 LE, K ≤ N
 *   8+6N        K * 4096  the contents of entries 0..K-1, in entry order (zeros for a page the
 *                         memory image holds as zero)
 *
 * Why the copies: a working set is scattered over the memory image, and a page reaches a guest
 * only once its whole 64 KiB chunk was read and hashed, so a W0 of 1,000 pages cost ~800 chunk
 * reads (50 MiB hashed, ~0.5 s with four VMs restoring on two cores). The copies are one
 * sequential read, checked by the envelope's sha256 (and the manifest's). They are taken from
 * checked reads of the memory image when a restore refines the working set.
 *
 * A file without copies is written as version 1, byte for byte what version-1 readers know.
 * The counts are checked against the body length before any entry is read. Entries are checked
 * against the VM's blocks by the caller (`checkWorkingSet`), since the file does not know them.
 */

export const WORKING_SET_MAGIC = "HRWS";
export const WORKING_SET_VERSION = 2;
const ENTRY_BYTES = 6;
const COPY_BYTES = 4096;
/** 2^26 entries = 256 GiB of working set; far above any VM we run, low enough to bound memory. */
export const MAX_WORKING_SET_ENTRIES = 1 << 26;
/**
 * Pages of a working set whose contents are copied into its file (16 MiB): above any W0 the
 * restore line plans on our clusters (1,024 pages plus slack), small enough to read and hash in
 * tens of ms.
 */
export const WORKING_SET_COPY_PAGES = 4096;

export interface WorkingSetSlot {
  block: number;
  page: number;
}

/** `copies`: the contents of the first `copies.length / 4096` entries (none: version 1). */
export function encodeWorkingSet(entries: readonly WorkingSetSlot[], copies?: Buffer): Buffer {
  const copied = copies === undefined ? 0 : copies.length / COPY_BYTES;
  if (!Number.isInteger(copied) || copied > entries.length) {
    throw badInput(`working set copies: ${copies?.length} bytes for ${entries.length} entries`);
  }
  const head = 4 + entries.length * ENTRY_BYTES;
  const body = Buffer.alloc(head + (copied > 0 ? 4 + copied * COPY_BYTES : 0));
  body.writeUInt32LE(entries.length, 0);
  entries.forEach((entry, i) => {
    body.writeUInt16LE(entry.block, 4 + i * ENTRY_BYTES);
    body.writeUInt32LE(entry.page, 4 + i * ENTRY_BYTES + 2);
  });
  if (copied === 0) return seal(WORKING_SET_MAGIC, 1, body);
  body.writeUInt32LE(copied, head);
  copies?.copy(body, head + 4);
  return seal(WORKING_SET_MAGIC, WORKING_SET_VERSION, body);
}

export interface DecodedWorkingSet {
  slots: WorkingSetSlot[];
  /** The contents of slots 0..copies.length/4096-1 (a view into the file's bytes). */
  copies: Buffer;
}

export function decodeWorkingSet(file: string, bytes: Buffer): WorkingSetSlot[] {
  return decodeWorkingSetFile(file, bytes).slots;
}

/** `verified`: the bytes matched the manifest's sha256 (see unseal). */
export function decodeWorkingSetFile(file: string, bytes: Buffer, verified = false): DecodedWorkingSet {
  const body = unseal(file, bytes, WORKING_SET_MAGIC, WORKING_SET_VERSION, verified);
  const version = bytes.readUInt16LE(4);
  const count = body.u32("entry count");
  const entryBytes = count * ENTRY_BYTES;
  const rest = body.remaining - entryBytes;
  if (count > MAX_WORKING_SET_ENTRIES || rest < 0 || (version === 1 && rest !== 0)) {
    throw corrupt(file, `entry count ${count} does not match the ${body.remaining} bytes of entries`);
  }
  const slots: WorkingSetSlot[] = new Array<WorkingSetSlot>(count);
  for (let i = 0; i < count; i++) {
    const block = body.u16("block index");
    const page = body.u32("page number");
    slots[i] = { block, page };
  }
  if (version === 1) {
    body.end();
    return { slots, copies: Buffer.alloc(0) };
  }
  const copied = body.u32("copy count");
  if (copied > count || copied * COPY_BYTES !== body.remaining) {
    throw corrupt(
      file,
      `copy count ${copied} does not match ${count} entries and ${body.remaining} bytes of copies`,
    );
  }
  const copies = body.bytes(copied * COPY_BYTES, "copies");
  body.end();
  return { slots, copies };
}

/** Checks decoded entries against the VM's blocks (page counts, in manifest order). */
export function checkWorkingSet(
  file: string,
  entries: readonly WorkingSetSlot[],
  blockPages: number[],
): void {
  const seen = new Set<number>();
  entries.forEach((entry, i) => {
    const pages = blockPages[entry.block];
    if (pages === undefined) throw corrupt(file, `entry ${i}: no block ${entry.block}`);
    if (entry.page >= pages) throw corrupt(file, `entry ${i}: page ${entry.page} past the end of its block`);
    const key = entry.block * 2 ** 32 + entry.page;
    if (seen.has(key)) throw corrupt(file, `entry ${i}: page listed twice`);
    seen.add(key);
  });
}

/** A working set entry as callers see it: a page of a RAM block named by its id. */
export interface WorkingSetEntry {
  blockId: string;
  page: number;
}

/**
 * Entries → slots for a VM whose blocks are `blocks` (manifest order). Unknown blocks and pages
 * past a block's end are refused; a page listed again is dropped (its first access is what counts).
 */
export function slotsFromEntries(
  vm: string,
  entries: readonly WorkingSetEntry[],
  blocks: readonly { id: string; pages: number }[],
): WorkingSetSlot[] {
  if (entries.length > MAX_WORKING_SET_ENTRIES) throw badInput(`VM ${vm}: working set too large`);
  const indexOf = new Map(blocks.map((block, index) => [block.id, index]));
  const seen = new Set<number>();
  const slots: WorkingSetSlot[] = [];
  for (const entry of entries) {
    const block = indexOf.get(entry.blockId);
    if (block === undefined) throw badInput(`VM ${vm}: working set names unknown block ${entry.blockId}`);
    const pages = blocks[block]?.pages ?? 0;
    if (!Number.isInteger(entry.page) || entry.page < 0 || entry.page >= pages) {
      throw badInput(`VM ${vm}: working set page ${entry.page} outside block ${entry.blockId}`);
    }
    const key = block * 2 ** 32 + entry.page;
    if (seen.has(key)) continue;
    seen.add(key);
    slots.push({ block, page: entry.page });
  }
  return slots;
}

export function entriesFromSlots(
  slots: readonly WorkingSetSlot[],
  blocks: readonly { id: string }[],
): WorkingSetEntry[] {
  return slots.map((slot) => ({ blockId: blocks[slot.block]?.id ?? "", page: slot.page }));
}
