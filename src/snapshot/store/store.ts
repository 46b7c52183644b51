import { createHash, randomBytes } from "node:crypto";
import { mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import { HrError, isHrError } from "../../util/errors.ts";
import { SnapshotBuilder } from "./builder.ts";
import { isNotFound, readError, writeError } from "./errors.ts";
import { fsyncDir } from "./fs-io.ts";
import { checkSnapshotName, SNAPSHOT_NAME_RE, TEMP_PREFIX, TRASH_PREFIX } from "./layout.ts";
import { loadManifest, SnapshotReader } from "./reader.ts";
import { summarize, type SnapshotSummary } from "./summary.ts";
import { verifySnapshot, type VerifyReport } from "./verify.ts";

/**
 * The snapshot store: a directory of snapshots (layout.ts). Embedded default; everything goes
 * through whole-file reads, positional reads and renames, so a shared or object-store backend
 * can take its place behind the same API later.
 *
 * Who may delete a temporary directory: its name records the host, pid and a random tag of the
 * process writing it. `cleanupStale` removes it when that process is gone (same host, pid not
 * alive), or when the pid is ours but no builder of this process made it (a previous process
 * that had the same pid, common for a daemon in a container). A builder of this process stays
 * the owner until commit() or abort(), even if dropped. Other hosts' directories are left alone.
 */

/** One directory of the store: a readable snapshot, or one whose manifest cannot be read. */
export type SnapshotListEntry =
  | { status: "ok"; name: string; path: string; summary: SnapshotSummary }
  | { status: "damaged"; name: string; path: string; error: { code: string; message: string } };

const HOST_TAG = createHash("sha256").update(hostname()).digest("hex").slice(0, 8);
const TEMP_RE = /^\.tmp-(.+)-([0-9a-f]{8})-(\d+)-([0-9a-f]{8})$/;
/** Temporary directories of live builders of this process. */
const liveTempDirs = new Set<string>();

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: unknown }).code === "EPERM";
  }
}

export interface StoreOptions {
  /** Pages buffered per VM before a write batch goes to disk (default 2048 = 8 MiB). */
  stagingPages?: number;
}

export class SnapshotStore {
  readonly root: string;
  readonly #options: StoreOptions;

  constructor(root: string, options: StoreOptions = {}) {
    this.root = resolve(root);
    this.#options = options;
  }

  pathOf(name: string): string {
    checkSnapshotName(name);
    return join(this.root, name);
  }

  async #existing(name: string): Promise<string> {
    const dir = this.pathOf(name);
    const stats = await stat(dir).catch((error: unknown) => {
      if (isNotFound(error)) return undefined;
      throw readError(name, error);
    });
    if (stats === undefined || !stats.isDirectory()) {
      throw new HrError("SNAPSHOT_NOT_FOUND", `no snapshot named ${name} in ${this.root}`, {
        hint: "`hotrestore snapshots` lists the snapshots",
      });
    }
    return dir;
  }

  /** Committed snapshots, oldest first; one whose manifest cannot be read is listed as damaged. */
  async list(): Promise<SnapshotListEntry[]> {
    const names = await readdir(this.root).catch((error: unknown) => {
      if (isNotFound(error)) return [] as string[];
      throw readError(this.root, error);
    });
    const entries: SnapshotListEntry[] = [];
    for (const name of names.filter((candidate) => SNAPSHOT_NAME_RE.test(candidate)).sort()) {
      const dir = join(this.root, name);
      try {
        const summary = await summarize(dir, await loadManifest(dir, name));
        entries.push({ status: "ok", name, path: dir, summary });
      } catch (error) {
        if (!isHrError(error)) throw error;
        entries.push({
          status: "damaged",
          name,
          path: dir,
          error: { code: error.code, message: error.message },
        });
      }
    }
    const time = (entry: SnapshotListEntry): string => (entry.status === "ok" ? entry.summary.createdAt : "");
    return entries.sort((a, b) => time(a).localeCompare(time(b)));
  }

  /** Starts a snapshot in a temporary directory; refuses a name already committed. */
  async begin(name: string): Promise<SnapshotBuilder> {
    const target = this.pathOf(name);
    const exists = await stat(target).then(
      () => true,
      (error: unknown) => (isNotFound(error) ? false : Promise.reject(readError(name, error))),
    );
    if (exists) {
      throw new HrError("SNAPSHOT_EXISTS", `a snapshot named ${name} already exists`, {
        hint: "choose another name, or remove the existing snapshot first",
      });
    }
    const tempName = `${TEMP_PREFIX}${name}-${HOST_TAG}-${process.pid}-${randomBytes(4).toString("hex")}`;
    const tempDir = join(this.root, tempName);
    try {
      await mkdir(this.root, { recursive: true });
      await mkdir(tempDir, { mode: 0o700 });
    } catch (error) {
      throw writeError(tempDir, error);
    }
    liveTempDirs.add(tempDir);
    const settled = (): void => void liveTempDirs.delete(tempDir);
    return new SnapshotBuilder(this.root, name, tempDir, settled, this.#options.stagingPages);
  }

  /** Opens a committed snapshot after checking its manifest and every file's size. */
  async open(name: string): Promise<SnapshotReader> {
    return SnapshotReader.open(await this.#existing(name), name);
  }

  async inspect(name: string): Promise<SnapshotSummary> {
    const reader = await this.open(name);
    try {
      return await reader.summary();
    } finally {
      await reader.close();
    }
  }

  /** Checks every checksum of every file and chunk; damage is listed in the report, not thrown. */
  async verify(name: string): Promise<VerifyReport> {
    return verifySnapshot(await this.#existing(name), name);
  }

  /** Removes a snapshot: renamed away atomically first (gone from `list` at once), then deleted. */
  async remove(name: string): Promise<void> {
    const dir = await this.#existing(name);
    const trash = join(this.root, `${TRASH_PREFIX}${name}-${randomBytes(4).toString("hex")}`);
    try {
      await rename(dir, trash);
      await fsyncDir(this.root);
    } catch (error) {
      throw writeError(dir, error);
    }
    await rm(trash, { recursive: true, force: true });
  }

  /** Removes leftovers of crashed snapshots and interrupted removals; returns their names. */
  async cleanupStale(): Promise<string[]> {
    const names = await readdir(this.root).catch((error: unknown) => {
      if (isNotFound(error)) return [] as string[];
      throw readError(this.root, error);
    });
    const removed: string[] = [];
    for (const name of names) {
      const path = join(this.root, name);
      if (!name.startsWith(TRASH_PREFIX) && !this.#isStaleTemp(name, path)) continue;
      await rm(path, { recursive: true, force: true });
      removed.push(name);
    }
    return removed;
  }

  #isStaleTemp(name: string, path: string): boolean {
    const match = TEMP_RE.exec(name);
    if (match === null) return name.startsWith(TEMP_PREFIX);
    const [, , host, pid] = match;
    if (host !== HOST_TAG) return false;
    if (Number(pid) === process.pid) return !liveTempDirs.has(path);
    return !processAlive(Number(pid));
  }
}
