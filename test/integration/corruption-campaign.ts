import { createHash } from "node:crypto";
/**
 * The corruption campaign: N seeded damages, each applied to its own hard-link copy of one
 * pristine snapshot and judged in-process (corruption-judge.ts). Returns counts by damage kind and
 * every failure (a damage accepted, a guest on wrong memory, an error that is not ours, an error
 * that names neither the file nor the VM).
 */
import { mkdir, readFile, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { createRandom } from "../../src/sim/random.ts";
import { Bitmap } from "../../src/snapshot/store/bitmap.ts";
import { decodeMemoryIndex } from "../../src/snapshot/store/memory-index.ts";
import { messageOf } from "../../src/util/errors.ts";
import {
  deleteFile,
  editManifest,
  extendFile,
  flip,
  linkFarm,
  listFiles,
  copyFileSparse,
  swapFiles,
  symlinkFile,
  truncateFile,
  wrongVersion,
  type AppliedDamage,
  type Pristine,
  type Random,
  undo,
} from "./corruption-damage.ts";
import { judge, memoryDigests, verifyDamages } from "./corruption-judge.ts";

export interface KindCount {
  total: number;
  refusedBeforeStart: number;
  refusedAtChunkRead: number;
  /** Raw-image bytes no restore streams (holes of chunks without data); `verify` still lists them. */
  streamsPristine: number;
  verified: number;
}

export interface CampaignResult {
  byKind: Map<string, KindCount>;
  failures: string[];
  /** Draws that changed nothing (the same bytes swapped) and were drawn again. */
  noOps: number;
  codes: Map<string, number>;
}

type Apply = (pristine: Pristine, copy: string, random: Random) => Promise<AppliedDamage | null>;

/** Share of each damage family, in draws out of 100. */
const FAMILIES: [number, Apply][] = [
  [45, flip],
  [9, truncateFile],
  [4, extendFile],
  [9, deleteFile],
  [9, swapFiles],
  [3, symlinkFile],
  [7, (_pristine, copy, random) => wrongVersion(copy, random)],
  [14, editManifest],
];

function family(random: Random): Apply {
  let draw = random() * FAMILIES.reduce((sum, [weight]) => sum + weight, 0);
  for (const [weight, apply] of FAMILIES) {
    draw -= weight;
    if (draw < 0) return apply;
  }
  return flip;
}

export async function readPristine(dir: string, vms: string[]): Promise<Pristine> {
  const files = await listFiles(dir);
  const sizes = new Map<string, number>();
  const presentPages = new Map<string, number[]>();
  const sha256 = new Map<string, string>();
  for (const file of files) {
    const bytes = file.endsWith(".raw") ? Buffer.alloc(0) : await readFile(join(dir, file));
    sizes.set(file, file.endsWith(".raw") ? (await stat(join(dir, file))).size : bytes.length);
    // a raw image is named by its index (bitmap and chunk checksums): hashing its holes is slow
    if (!file.endsWith(".raw")) sha256.set(file, createHash("sha256").update(bytes).digest("hex"));
    if (file.endsWith(".idx")) sha256.set(file.replace(/\.idx$/, ".raw"), sha256.get(file) ?? "");
    if (!file.endsWith(".idx")) continue;
    const index = decodeMemoryIndex(file, bytes);
    const present: Bitmap = index.present;
    const pages: number[] = [];
    for (let page = 0; page < index.pageCount; page++) if (present.get(page)) pages.push(page);
    presentPages.set(file.replace(/\.idx$/, ".raw"), pages);
  }
  return { dir, files, sizes, sha256, presentPages, vms };
}

/** A copy of the pristine snapshot at `to` (e.g. on tmpfs, where the copies' links are cheap), raw images kept sparse. */
export async function copyPristine(pristine: Pristine, to: string): Promise<Pristine> {
  for (const file of pristine.files) {
    await mkdir(join(to, file, ".."), { recursive: true });
    const pages = file.endsWith(".raw") ? (pristine.presentPages.get(file) ?? []) : undefined;
    await copyFileSparse(join(pristine.dir, file), join(to, file), pages);
  }
  return { ...pristine, dir: to };
}

export async function runCampaign(options: {
  pristine: Pristine;
  work: string;
  count: number;
  seed: number;
  /** Also run `snapshot verify` on one damage in this many (always when no restore would notice). */
  verifyEvery: number;
  /** Damages judged at once (file system waits overlap). */
  concurrency: number;
}): Promise<CampaignResult> {
  const digests = await memoryDigests(options.pristine.dir);
  const result: CampaignResult = { byKind: new Map(), failures: [], noOps: 0, codes: new Map() };
  let next = 0;
  // Each worker keeps one copy (a hard-link farm) and puts back what each damage touched.
  const worker = async (_: unknown, number: number): Promise<void> => {
    const dir = join(options.work, String(number), "s1");
    await linkFarm(options.pristine.dir, dir, options.pristine.files);
    try {
      for (let index = next++; index < options.count; index = next++) {
        await runOne(options, index, dir, digests, result);
      }
    } finally {
      await rm(join(dir, ".."), { recursive: true, force: true });
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  return result;
}

/** Damage number `index`: its own PRNG (seed and index), so the run does not depend on scheduling. */
async function runOne(
  options: { pristine: Pristine; seed: number; verifyEvery: number },
  index: number,
  dir: string,
  digests: ReadonlyMap<string, string>,
  result: CampaignResult,
): Promise<void> {
  const { pristine } = options;
  const random = createRandom((options.seed * 1_000_003 + index) >>> 0);
  let damage: AppliedDamage | null = null;
  while (damage === null) {
    damage = await family(random)(pristine, dir, random);
    if (damage === null) result.noOps += 1;
  }
  try {
    const counts = result.byKind.get(damage.kind) ?? {
      total: 0,
      refusedBeforeStart: 0,
      refusedAtChunkRead: 0,
      streamsPristine: 0,
      verified: 0,
    };
    result.byKind.set(damage.kind, counts);
    counts.total += 1;
    const what = `#${index} ${damage.kind} ${damage.detail}`;
    const fail = (why: string): void => void result.failures.push(`${what}: ${why}`);
    const names = damage.names;
    const vms = pristine.vms.filter((vm) => names.some((name) => name.startsWith(`vms/${vm}/`)));
    const outcome = await judge(dir, digests, damage.rawContent ? vms : undefined);
    switch (outcome.kind) {
      case "refused-before-start":
      case "refused-at-chunk-read": {
        const message = outcome.error.message;
        if (!names.some((name) => message.includes(name))) {
          fail(`refused, but the error names none of ${names.join(", ")}: ${message}`);
        }
        if (outcome.kind === "refused-at-chunk-read" && !damage.rawContent)
          fail(`passed preflight: ${message}`);
        result.codes.set(outcome.error.code, (result.codes.get(outcome.error.code) ?? 0) + 1);
        if (outcome.kind === "refused-before-start") counts.refusedBeforeStart += 1;
        else counts.refusedAtChunkRead += 1;
        break;
      }
      case "streams-pristine-memory":
        if (!damage.rawContent) fail("accepted: passed every check before start");
        counts.streamsPristine += 1;
        break;
      case "wrong-memory":
        fail(`a restore would stream wrong memory to VM ${outcome.vm}`);
        break;
      case "crash":
        fail(
          `crashed: ${outcome.error instanceof Error ? (outcome.error.stack ?? "") : messageOf(outcome.error)}`,
        );
        break;
    }
    if (outcome.kind === "streams-pristine-memory" || index % options.verifyEvery === 0) {
      const verify = await verifyDamages(dir);
      if ("crash" in verify) fail(`verify crashed: ${messageOf(verify.crash)}`);
      else if (!verify.files.some((line) => names.some((name) => line.includes(name)))) {
        fail(`verify names none of ${names.join(", ")}: ${verify.files.join("; ") || "no damage found"}`);
      } else counts.verified += 1;
    }
  } finally {
    await undo(pristine, dir, damage);
  }
  const left = await listFiles(dir);
  if (left.join("\n") !== pristine.files.join("\n")) throw new Error(`#${index}: the copy was not put back`);
}

/** One line per kind: refused before start / at chunk read / streams pristine memory, of total. */
export function formatCounts(result: CampaignResult): string {
  const lines = [...result.byKind]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(
      ([kind, c]) =>
        `${kind.padEnd(26)} ${String(c.total).padStart(4)}  before-start ${String(c.refusedBeforeStart).padStart(4)}` +
        `  at-chunk-read ${String(c.refusedAtChunkRead).padStart(3)}  streams-pristine ${String(c.streamsPristine).padStart(3)}` +
        `  verify-checked ${c.verified}`,
    );
  const codes = [...result.codes].map(([code, n]) => `${code} ${n}`).join(", ");
  return [...lines, `no-op draws redrawn: ${result.noOps}`, `error codes: ${codes}`].join("\n");
}
