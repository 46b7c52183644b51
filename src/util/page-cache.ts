import { execFile } from "node:child_process";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/**
 * Drops a file, or every file under a directory, from the page cache: posix_fadvise(POSIX_FADV_DONTNEED) through GNU
 * dd (`iflag=nocache count=0`), so the next restore reads the snapshot cold, as after a reboot.
 */
export async function dropPageCache(path: string): Promise<void> {
  if (!(await stat(path)).isDirectory()) {
    await execFileAsync("dd", [`if=${path}`, "iflag=nocache", "count=0", "status=none"]);
    return;
  }
  for (const entry of await readdir(path, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    await execFileAsync("dd", [
      `if=${join(entry.parentPath, entry.name)}`,
      "iflag=nocache",
      "count=0",
      "status=none",
    ]);
  }
}
