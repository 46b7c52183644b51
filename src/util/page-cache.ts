import { execFile } from "node:child_process";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

/**
 * Drops every file under `dir` from the page cache: posix_fadvise(POSIX_FADV_DONTNEED) through GNU
 * dd (`iflag=nocache count=0`), so the next restore reads the snapshot cold, as after a reboot.
 */
export async function dropPageCache(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    await execFileAsync("dd", [`if=${path}`, "iflag=nocache", "count=0", "status=none"]);
  }
}
