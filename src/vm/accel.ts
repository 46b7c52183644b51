import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { release, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Accel } from "./argv.ts";
import { kernelCommandLine } from "./argv.ts";
import type { GuestImage } from "../image/image.ts";
import { spawnGuarded } from "./process.ts";

/**
 * Which accelerator really boots our guest here. `/dev/kvm` existing is not enough: on our
 * machines it is a nested PVM layer on which a stock kernel hangs in its decompressor. So KVM is
 * chosen only if a guest started with it reaches our /init's boot line within PROBE_TIMEOUT_MS.
 * The verdict is cached per host kernel in the cache directory (the guest does not change it).
 * HOTRESTORE_ACCEL=kvm|tcg overrides the probe.
 */
export const PROBE_TIMEOUT_MS = 15_000;
export const QEMU = "qemu-system-x86_64";

export interface AccelVerdict {
  accel: Accel;
  reason: string;
  hostKernel: string;
  guestHash: string;
  probedAt: string;
}

export async function chooseAccel(image: GuestImage, cache: string): Promise<AccelVerdict> {
  const forced = process.env.HOTRESTORE_ACCEL;
  if (forced === "kvm" || forced === "tcg") {
    return verdict(forced, "forced by HOTRESTORE_ACCEL", image);
  }
  const file = join(cache, "accel.json");
  try {
    const cached = JSON.parse(await readFile(file, "utf8")) as AccelVerdict;
    if (cached.hostKernel === release()) return cached;
  } catch {
    // no verdict yet
  }
  const result = await probe(image);
  await mkdir(cache, { recursive: true });
  await writeFile(file, JSON.stringify(result, null, 2));
  return result;
}

function verdict(accel: Accel, reason: string, image: GuestImage): AccelVerdict {
  return { accel, reason, hostKernel: release(), guestHash: image.hash, probedAt: new Date().toISOString() };
}

async function probe(image: GuestImage): Promise<AccelVerdict> {
  if (!existsSync("/dev/kvm")) return verdict("tcg", "no /dev/kvm", image);
  const dir = await mkdtemp(join(tmpdir(), "hr-accel-"));
  const consoleLog = join(dir, "console.log");
  const proc = spawnGuarded(
    QEMU,
    [
      "-accel",
      "kvm",
      "-m",
      "128",
      "-nodefaults",
      "-no-user-config",
      "-no-reboot",
      "-display",
      "none",
      "-serial",
      `file:${consoleLog}`,
      "-kernel",
      image.kernel,
      "-initrd",
      image.initrd,
      "-append",
      kernelCommandLine({ "hr.name": "probe", "hr.ip": "10.0.0.2/24" }),
    ],
    join(dir, "qemu.log"),
  );
  try {
    const deadline = Date.now() + PROBE_TIMEOUT_MS;
    while (Date.now() < deadline && proc.isRunning()) {
      const text = await readFile(consoleLog, "utf8").catch(() => "");
      if (text.includes("HOTRESTORE-BOOT")) return verdict("kvm", "a guest booted with KVM", image);
      await sleep(200);
    }
    const why = proc.isRunning()
      ? `a KVM guest did not boot within ${PROBE_TIMEOUT_MS / 1000} s (nested or paravirtual /dev/kvm?)`
      : `QEMU with -accel kvm exited: ${(await proc.logTail(3)).replace(/\s+/g, " ")}`;
    return verdict("tcg", why, image);
  } finally {
    await proc.stop(500);
    await rm(dir, { recursive: true, force: true });
  }
}
