import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { HrError, messageOf } from "../util/errors.ts";
import { guestDir } from "../util/paths.ts";

/** The guest image built by `scripts/setup.sh` into the cache directory. */
export interface GuestImage {
  kernel: string;
  initrd: string;
  /** Hash of the inputs the image was built from (changes when the guest sources change). */
  hash: string;
  kernelVersion: string;
}

export async function loadGuestImage(dir = guestDir()): Promise<GuestImage> {
  let meta: { hash?: unknown; inputsHash?: unknown; kernelVersion?: unknown; kernel?: unknown };
  try {
    meta = JSON.parse(await readFile(join(dir, "guest.json"), "utf8")) as typeof meta;
  } catch (error) {
    throw new HrError("IMAGE_MISSING", `no guest image in ${dir}: ${messageOf(error)}`, {
      cause: error,
      hint: "build it with: npm run setup",
    });
  }
  const hash = meta.inputsHash ?? meta.hash;
  const version = meta.kernelVersion ?? meta.kernel;
  return {
    kernel: join(dir, "vmlinuz"),
    initrd: join(dir, "initramfs.cpio.gz"),
    hash: typeof hash === "string" ? hash : "unknown",
    kernelVersion: typeof version === "string" ? version : "unknown",
  };
}
