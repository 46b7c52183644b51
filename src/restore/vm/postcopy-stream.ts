/**
 * The fixed parts of the post-copy stream the page server plays toward a QEMU 7.2 destination
 * (/work/shared/qemu/postcopy-protocol-7.2.md, QEMU migration/savevm.c). Pure: bytes only.
 *
 *   preamble   header, CONFIGURATION (verbatim), OPEN_RETURN_PATH, PING 1,
 *              POSTCOPY_ADVISE(4096, 4096), ram SECTION_START (block list)
 *   prefetch   ram SECTION_PART × n       loaded by the precopy loader before userfault is armed
 *   discard    POSTCOPY_RAM_DISCARD of every page that was not prefetched (planDiscards). 7.2
 *              needs at least one discard before LISTEN or the destination stays in state DISCARD:
 *              its listen thread then memcpys into registered RAM (deadlock) and RUN fails
 *              ("wrong postcopy state"); and THP makes discarding *every* other page necessary
 *   package    PACKAGED { POSTCOPY_LISTEN, device state (verbatim SECTION_FULLs), PING 3,
 *              POSTCOPY_RUN }; PONG 3 on the return path means the device state is loaded
 *   pages      ram SECTION_PART × m       requested pages and background pages, interleaved
 *   end        ram SECTION_END (EOS only), EOF; the destination answers SHUT 0
 *
 * A discarded page is zapped and its "received" bit cleared by the destination: it must be sent
 * (once) after LISTEN like any other page, so a prefetched page is never discarded.
 */
import {
  encodeEof,
  encodeHeader,
  encodeOpenReturnPath,
  encodePackaged,
  encodePing,
  encodePostcopyAdvise,
  encodePostcopyListen,
  encodePostcopyRun,
  encodeRamDiscard,
  encodeRamSection,
  encodeRamStart,
  type DiscardRange,
  type RamStart,
} from "../../migration/index.ts";
import { HrError } from "../../util/errors.ts";
import { PAGE_BYTES, type PageSpace } from "./page-server-space.ts";

export const PING_PREAMBLE = 1;
export const PING_PACKAGE = 3;

export interface StreamParts {
  configuration: Buffer;
  ramStart: RamStart;
  deviceState: Buffer;
}

export function encodePreamble(parts: StreamParts): Buffer {
  return Buffer.concat([
    encodeHeader(),
    parts.configuration,
    encodeOpenReturnPath(),
    encodePing(PING_PREAMBLE),
    encodePostcopyAdvise(PAGE_BYTES, PAGE_BYTES),
    encodeRamStart(parts.ramStart),
  ]);
}

/** LISTEN, the device state, PING 3 and RUN, inside one PACKAGED command. */
export function encodeRunPackage(deviceState: Buffer): Buffer {
  if (deviceState.length > 0 && deviceState[0] !== 0x04) {
    throw new HrError("PAGE_SERVER_BAD_INPUT", "device state must start with a SECTION_FULL (0x04)");
  }
  return encodePackaged(
    Buffer.concat([encodePostcopyListen(), deviceState, encodePing(PING_PACKAGE), encodePostcopyRun()]),
  );
}

/** SECTION_END with no pages, then EOF. */
export function encodeStreamEnd(sectionId: number): Buffer {
  return Buffer.concat([encodeRamSection("end", sectionId, []), encodeEof()]);
}

/** Ranges per POSTCOPY_RAM_DISCARD command: 16 bytes each, within the 16-bit command length. */
export const DISCARD_RANGES_PER_COMMAND = 4000;

export interface DiscardPlan {
  /** The prefetch list to send: deduplicated, and one page shorter if it covered every page. */
  prefetch: number[];
  /** POSTCOPY_RAM_DISCARD commands covering every page that is not prefetched (at least one). */
  discards: Buffer[];
  ranges: number;
}

/**
 * Discards every page that is not prefetched. Needed beyond the 7.2 "at least one discard" rule:
 * guest RAM is THP-backed (QEMU madvises it HUGEPAGE), so loading a prefetched page can populate
 * its whole 2 MiB huge page with zeros; such neighbours would never fault and the guest would read
 * zeros (seen as virtio "Guest index 0x0 inconsistent" at device load). The first discard sets
 * NOHUGEPAGE, and discarding the neighbours zaps them so they fault like every other missing page.
 */
export function planDiscards(space: PageSpace, prefetchOrder: readonly number[]): DiscardPlan {
  const flags = new Uint8Array(space.total);
  const prefetch: number[] = [];
  for (const index of prefetchOrder) {
    if (flags[index] === 1) continue;
    flags[index] = 1;
    prefetch.push(index);
  }
  if (prefetch.length === space.total && prefetch.length > 0) {
    // 7.2 wants a discard with at least one range: give one page up to the post-copy phase.
    flags[prefetch.pop()!] = 0;
  }
  const discards: Buffer[] = [];
  let count = 0;
  for (const block of space.blocks) {
    let ranges: DiscardRange[] = [];
    let page = 0;
    while (page < block.pages) {
      if (flags[block.base + page] === 1) {
        page += 1;
        continue;
      }
      const first = page;
      while (page < block.pages && flags[block.base + page] !== 1) page += 1;
      ranges.push({ start: first * PAGE_BYTES, length: (page - first) * PAGE_BYTES });
      if (ranges.length === DISCARD_RANGES_PER_COMMAND) {
        discards.push(encodeRamDiscard(block.id, ranges));
        count += ranges.length;
        ranges = [];
      }
    }
    if (ranges.length > 0) {
      discards.push(encodeRamDiscard(block.id, ranges));
      count += ranges.length;
    }
  }
  if (discards.length === 0) throw new HrError("PAGE_SERVER_BAD_INPUT", "the VM has no RAM to discard");
  return { prefetch, discards, ranges: count };
}
