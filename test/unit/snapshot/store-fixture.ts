import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SnapshotStore, type BlockSpec, type SnapshotBuilder } from "../../../src/snapshot/store/index.ts";
import { HrError } from "../../../src/util/errors.ts";

/** Temporary store roots for one test file; `removeAll` goes in its `after()`. */
export class TempDirs {
  readonly #dirs: string[] = [];

  async make(prefix = "hr-store-"): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), prefix));
    this.#dirs.push(dir);
    return dir;
  }

  async store(): Promise<SnapshotStore> {
    return new SnapshotStore(await this.make());
  }

  async removeAll(): Promise<void> {
    await Promise.all(this.#dirs.map((dir) => rm(dir, { recursive: true, force: true })));
  }
}

/** Deterministic xorshift32, so a failure can be reproduced from its seed. */
export class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0 || 1;
  }

  next(): number {
    this.#state ^= this.#state << 13;
    this.#state ^= this.#state >>> 17;
    this.#state ^= this.#state << 5;
    return this.#state >>> 0;
  }

  /** An integer in [0, bound). */
  below(bound: number): number {
    return this.next() % bound;
  }

  bytes(length: number): Buffer {
    const out = Buffer.alloc(Math.ceil(length / 4) * 4);
    for (let i = 0; i < out.length; i += 4) out.writeUInt32LE(this.next(), i);
    return out.subarray(0, length);
  }

  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.below(i + 1);
      [items[i], items[j]] = [items[j] as T, items[i] as T];
    }
    return items;
  }
}

/** A page whose content says which block, page and version it is (never all zeros). */
export function pageContent(rng: Rng, tag: number): Buffer {
  const page = rng.bytes(4096);
  page.writeUInt32LE(tag, 0);
  page[8] = 1;
  return page;
}

/** Expected content of every page written, by `<vm>|<block>` → page → bytes (undefined = zero). */
export type Expected = Map<string, Map<number, Buffer | undefined>>;

export const BLOCKS: BlockSpec[] = [
  { id: "pc.ram", usedLength: 600 * 4096 },
  { id: "0000:00:02.0/vga.vram", usedLength: 64 * 4096 },
  { id: "/rom@etc/acpi/tables", usedLength: 3 * 4096 },
];

/**
 * Writes random pages of every block in random order: ~40% data, some zero, some written twice
 * (data over data, zero over data, data over zero). Returns what each page must read back as.
 */
export async function writeRandomVm(
  builder: SnapshotBuilder,
  vm: string,
  blocks: BlockSpec[],
  rng: Rng,
  expected: Expected,
): Promise<void> {
  const writer = await builder.vm(vm, blocks, { machine: "pc-q35-7.2", vm });
  const writes: { block: string; page: number }[] = [];
  for (const block of blocks) {
    const pages = block.usedLength / 4096;
    const map = new Map<number, Buffer | undefined>();
    expected.set(`${vm}|${block.id}`, map);
    for (let page = 0; page < pages; page++) {
      const roll = rng.below(10);
      if (roll < 4) writes.push({ block: block.id, page });
      if (roll < 1) writes.push({ block: block.id, page }); // written twice
      if (roll === 5) writes.push({ block: block.id, page }); // explicit zero page below
    }
  }
  rng.shuffle(writes);
  for (const { block, page } of writes) {
    const map = expected.get(`${vm}|${block}`);
    assert.ok(map);
    const zero = rng.below(4) === 0;
    const data = zero ? undefined : pageContent(rng, page);
    await writer.writePage(block, page * 4096, data ?? "zero");
    map.set(page, data);
  }
  await writer.setDeviceState(rng.bytes(5000 + rng.below(100)));
  await writer.setConfiguration(Buffer.from(`config of ${vm}`));
  await writer.setRamStart(Buffer.from([1, 2, 3]));
  const first = blocks[0];
  assert.ok(first);
  writer.setWorkingSet([
    { blockId: first.id, page: 5 },
    { blockId: first.id, page: 1 },
    { blockId: first.id, page: 5 },
    { blockId: blocks[1]?.id ?? first.id, page: 0 },
  ]);
}

/** Content of the file added to VM alpha with addVmFile (stands for its disk image). */
export const DISK_BYTES = Buffer.from("QFI\xfb a disk image of alpha at the cut", "latin1");

/** Builds and commits a small two-VM snapshot; returns what each page must read back as. */
export async function buildSmall(store: SnapshotStore, name: string, seed: number): Promise<Expected> {
  const rng = new Rng(seed);
  const expected: Expected = new Map();
  const builder = await store.begin(name);
  await writeRandomVm(builder, "alpha", BLOCKS, rng, expected);
  await writeRandomVm(
    builder,
    "beta",
    [BLOCKS[0] as BlockSpec, { id: "pc.bios", usedLength: 32 * 4096 }],
    rng,
    expected,
  );
  await builder.addVmFile("alpha", "disk.qcow2", (destination) => writeFile(destination, DISK_BYTES));
  builder.setSpec({ name: "lab", vms: [{ name: "alpha" }, { name: "beta" }] });
  builder.setTraffic({ edges: [{ from: "alpha", to: "beta", bytes: 1234 }] });
  builder.setInflight([
    { to: "beta", from: "alpha", data: Buffer.from("frame one, held at the cut") },
    { to: "alpha", from: "", data: Buffer.alloc(1514, 7) },
  ]);
  builder.setPause({ clusterMs: 42.5, vms: { alpha: 12, beta: 13.25 } });
  await builder.commit();
  return expected;
}

/** Asserts that `promise` rejects with an HrError (optionally of `code`) and returns it. */
export async function rejectsHr(promise: Promise<unknown>, code?: string): Promise<HrError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof HrError, `expected an HrError, got ${String(error)}`);
    if (code !== undefined) assert.equal(error.code, code, error.message);
    return error;
  }
  assert.fail("expected a rejection");
}
