import { spawn } from "node:child_process";
import { closeSync, constants, openSync } from "node:fs";
import { access, readdir, readFile, writeFile } from "node:fs/promises";
import { HrError, messageOf } from "../../../util/errors.ts";

/**
 * Mounting and unmounting our FUSE file systems, by mount(8) (util-linux): Node cannot call
 * mount(2), and mount(8) with `-i` (no helper) passes our options to the kernel as they are. The
 * device descriptor reaches it as its fd 3. Needs CAP_SYS_ADMIN (root here); without it, or
 * without /dev/fuse, `fuseUnavailable` says why and hotrestore uses the page server instead.
 */

/** The source name of our mounts in /proc/self/mountinfo (how stale ones are found). */
export const MOUNT_SOURCE = "hotrestore";
const MOUNT_TIMEOUT_MS = 10_000;

let probe: Promise<string | undefined> | undefined;

/** Why FUSE cannot be used here (undefined: it can). Probed once per process. */
export function fuseUnavailable(): Promise<string | undefined> {
  probe ??= (async () => {
    if (process.getuid?.() !== 0) return "mounting a FUSE file system needs root";
    try {
      closeSync(openSync("/dev/fuse", constants.O_RDWR));
    } catch (error) {
      return `/dev/fuse cannot be opened: ${messageOf(error)}`;
    }
    for (const tool of ["/usr/bin/mount", "/bin/mount"]) {
      if (
        await access(tool).then(
          () => true,
          () => false,
        )
      )
        return undefined;
    }
    return "mount(8) is not installed";
  })();
  return probe;
}

function run(command: string, args: string[], extraFd?: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const stdio: ("ignore" | "pipe" | number)[] = ["ignore", "ignore", "pipe"];
    if (extraFd !== undefined) stdio.push(extraFd);
    const child = spawn(command, args, { stdio });
    let stderr = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), MOUNT_TIMEOUT_MS);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve();
      else reject(new Error(`${command} ${args.join(" ")}: ${stderr.trim() || `exit ${code ?? signal}`}`));
    });
  });
}

/** Mounts the FUSE connection of `deviceFd` at `dir` (which must exist and be empty). */
export async function mountFuse(deviceFd: number, dir: string, maxReadBytes: number): Promise<void> {
  const options = [
    "fd=3",
    "rootmode=40000",
    `user_id=${process.getuid?.() ?? 0}`,
    `group_id=${process.getgid?.() ?? 0}`,
    `max_read=${maxReadBytes}`,
  ].join(",");
  try {
    await run("mount", ["-i", "-t", "fuse", "-o", options, MOUNT_SOURCE, dir], deviceFd);
  } catch (error) {
    throw new HrError(
      "FUSE_MOUNT_FAILED",
      `cannot mount the guest RAM file system at ${dir}: ${messageOf(error)}`,
      {
        hint: "the FUSE backend needs root and /dev/fuse; `--strategy lazy` and the page server work without them",
        cause: error,
      },
    );
  }
}

/**
 * Detaches the mount at `dir` (lazily: a process that still maps the file keeps what it has, and
 * its next page-cache miss fails with SIGBUS instead of waiting). Never throws; says what failed.
 */
export async function unmountFuse(dir: string): Promise<string | undefined> {
  try {
    await run("umount", ["-l", dir]);
    return undefined;
  } catch (error) {
    return messageOf(error);
  }
}

/** Mount points of our FUSE mounts under `prefix` (from /proc/self/mountinfo). */
export async function ourMounts(prefix: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile("/proc/self/mountinfo", "utf8");
  } catch {
    return [];
  }
  return parseFuseMounts(text).filter((dir) => dir === prefix || dir.startsWith(`${prefix}/`));
}

/** Pure: our mounts' mount points in mountinfo text (octal escapes such as \040 undone). */
export function parseFuseMounts(mountinfo: string): string[] {
  return fuseMounts(mountinfo)
    .filter((mount) => mount.source === MOUNT_SOURCE)
    .map((mount) => mount.mountPoint);
}

const FUSECTL = "/sys/fs/fuse/connections";

/** Pure: the FUSE connection number (the device minor) of the mount at `dir`, from mountinfo text. */
export function connectionOf(mountinfo: string, dir: string): number | undefined {
  return fuseMounts(mountinfo).find((mount) => mount.mountPoint === dir)?.connection;
}

/**
 * Every FUSE mount in mountinfo text. A line: id parent major:minor root mount-point options
 * [optional fields] - fstype source super-options (proc(5)); a FUSE mount's minor is its connection.
 */
function fuseMounts(
  mountinfo: string,
): { mountPoint: string; source: string; connection: number | undefined }[] {
  const out: { mountPoint: string; source: string; connection: number | undefined }[] = [];
  for (const line of mountinfo.split("\n")) {
    const dash = line.indexOf(" - ");
    if (dash < 0) continue;
    const fields = line.slice(0, dash).split(" ");
    const [fsType, source] = line.slice(dash + 3).split(" ");
    const mountPoint = fields[4];
    if (fsType !== "fuse" || source === undefined || mountPoint === undefined) continue;
    const minor = Number(fields[2]?.split(":")[1]);
    out.push({
      mountPoint: mountPoint.replace(/\\([0-7]{3})/g, (_, octal: string) =>
        String.fromCharCode(parseInt(octal, 8)),
      ),
      source,
      connection: Number.isInteger(minor) ? minor : undefined,
    });
  }
  return out;
}

/**
 * Ends a FUSE connection at once (fusectl's `abort`, mounting fusectl if needed): every request
 * waiting on it fails (a vCPU blocked on a miss gets SIGBUS, a close's FLUSH returns), and the
 * worker's read gets ENODEV. An unmount alone does not end it while a process still maps the file.
 * Never throws; says what failed.
 */
export async function abortFuse(connection: number): Promise<string | undefined> {
  try {
    if ((await readdir(FUSECTL)).length === 0) await run("mount", ["-t", "fusectl", "none", FUSECTL]);
    await writeFile(`${FUSECTL}/${connection}/abort`, "1");
    return undefined;
  } catch (error) {
    return messageOf(error);
  }
}
