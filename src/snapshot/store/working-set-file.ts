import { badInput, corrupt } from "./errors.ts";
import { seal, unseal } from "./sealed.ts";

/**
 * `vms/<vm>/workingset.bin`: the VM's working set, the pages it touches first after the cut,
 * in first-access order. Inside the envelope of sealed.ts (magic "HRWS", version 1):
 *
 *   offset  size    field
 *   0       4       entry count N, u32 LE
 *   4       N * 6   entries: block index u16 LE (into the manifest's block list of this VM),
 *                   page number u32 LE (within that block)
 *
 * The count is checked against the body length before any entry is read. Entries are checked
 * against the VM's blocks by the caller (`checkWorkingSet`), since the file does not know them.
 */

export const WORKING_SET_MAGIC = "HRWS";
export const WORKING_SET_VERSION = 1;
const ENTRY_BYTES = 6;
/** 2^26 entries = 256 GiB of working set; far above any VM we run, low enough to bound memory. */
export const MAX_WORKING_SET_ENTRIES = 1 << 26;

export interface WorkingSetSlot {
  block: number;
  page: number;
}

export function encodeWorkingSet(entries: readonly WorkingSetSlot[]): Buffer {
  const body = Buffer.alloc(4 + entries.length * ENTRY_BYTES);
  body.writeUInt32LE(entries.length, 0);
  entries.forEach((entry, i) => {
    body.writeUInt16LE(entry.block, 4 + i * ENTRY_BYTES);
    body.writeUInt32LE(entry.page, 4 + i * ENTRY_BYTES + 2);
  });
  return seal(WORKING_SET_MAGIC, WORKING_SET_VERSION, body);
}

export function decodeWorkingSet(file: string, bytes: Buffer): WorkingSetSlot[] {
  const body = unseal(file, bytes, WORKING_SET_MAGIC, WORKING_SET_VERSION);
  const count = body.u32("entry count");
  if (count > MAX_WORKING_SET_ENTRIES || count * ENTRY_BYTES !== body.remaining) {
    throw corrupt(file, `entry count ${count} does not match the ${body.remaining} bytes of entries`);
  }
  const entries: WorkingSetSlot[] = new Array<WorkingSetSlot>(count);
  for (let i = 0; i < count; i++) {
    const block = body.u16("block index");
    const page = body.u32("page number");
    entries[i] = { block, page };
  }
  body.end();
  return entries;
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
