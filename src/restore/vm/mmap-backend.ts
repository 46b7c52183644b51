import { optValue, RAM_BLOCK_ID } from "../../vm/argv.ts";

/**
 * Pure pieces of the `mmap` strategy: the guest RAM backend argv, and the reading of one mapping
 * out of `/proc/PID/smaps` (how much of the snapshot's RAM file the kernel has mapped in).
 *
 * The backend, measured on QEMU 7.2 here (see mmap.ts for the experiments):
 *
 *   -object memory-backend-file,id=ram0,size=<M>M,mem-path=<ram0.raw>,share=off,readonly=off,
 *           discard-data=off,prealloc=off
 *
 * - `share=off`: QEMU maps the file MAP_PRIVATE; a guest write copies the page (anonymous memory),
 *   the file never sees it.
 * - `readonly=off` is deliberate: 7.2 has `readonly=on`, but it maps guest RAM PROT_READ (the
 *   private-writable mapping of a read-only file, `rom=off`, only came with QEMU 8.2), and a guest
 *   on such RAM hangs at its first write. So QEMU opens the file O_RDWR (fdinfo flags 0100002); it
 *   never writes through a private mapping, and the only 7.2 paths that touch the file itself —
 *   ftruncate of an empty file, fallocate(PUNCH_HOLE) from ram_block_discard_range (balloon,
 *   virtio-mem, post-copy discard) — are not reachable: the raw image is always full-size, and our
 *   machines have none of those devices and load a precopy stream.
 * - `discard-data=off`, `prealloc=off`: the defaults, written out because either one on would read
 *   or punch the whole file.
 */
export function mmapRamBackend(rawPath: string, memoryMiB: number): string[] {
  if (!Number.isInteger(memoryMiB) || memoryMiB <= 0) {
    throw new RangeError(`memoryMiB must be a positive integer, got ${memoryMiB}`);
  }
  const options = [
    "memory-backend-file",
    `id=${RAM_BLOCK_ID}`,
    `size=${memoryMiB}M`,
    `mem-path=${optValue(rawPath)}`,
    "share=off",
    "readonly=off",
    "discard-data=off",
    "prealloc=off",
  ];
  return ["-object", options.join(",")];
}

/** One file mapping of a process, from /proc/PID/smaps (bytes). */
export interface MappingUsage {
  sizeBytes: number;
  /** Pages of the mapping present in the process's page tables. */
  rssBytes: number;
  /** Resident pages still shared with the file (page cache, never written by the guest). */
  cleanBytes: number;
  /** Pages the guest wrote: private copies (anonymous memory). */
  dirtyBytes: number;
}

const HEADER_RE = /^[0-9a-f]+-[0-9a-f]+\s+\S+\s+[0-9a-f]+\s+[0-9a-f]+:[0-9a-f]+\s+(\d+)\s*(.*)$/;
const FIELD_RE = /^([A-Za-z_]+):\s+(\d+) kB$/;

/**
 * Sums the smaps entries of the mappings of file `inode` whose path ends with `fileName` (a
 * mapping split by mprotect shows up as several entries). Undefined when there is none.
 */
export function mappingUsage(smaps: string, inode: number, fileName: string): MappingUsage | undefined {
  let found = false;
  let inside = false;
  const usage: MappingUsage = { sizeBytes: 0, rssBytes: 0, cleanBytes: 0, dirtyBytes: 0 };
  for (const line of smaps.split("\n")) {
    const header = HEADER_RE.exec(line);
    if (header !== null) {
      const path = (header[2] ?? "").replace(/ \(deleted\)$/, "");
      inside = Number(header[1]) === inode && path.endsWith(fileName);
      found ||= inside;
      continue;
    }
    if (!inside) continue;
    const field = FIELD_RE.exec(line);
    if (field === null) continue;
    const bytes = Number(field[2]) * 1024;
    switch (field[1]) {
      case "Size":
        usage.sizeBytes += bytes;
        break;
      case "Rss":
        usage.rssBytes += bytes;
        break;
      case "Private_Clean":
      case "Shared_Clean":
        usage.cleanBytes += bytes;
        break;
      case "Private_Dirty":
      case "Shared_Dirty":
        usage.dirtyBytes += bytes;
        break;
      default:
        break;
    }
  }
  return found ? usage : undefined;
}
