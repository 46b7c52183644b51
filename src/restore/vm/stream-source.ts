import {
  encodeHeader,
  MigrationStreamReader,
  type PageRecord,
  type RamStart,
} from "../../migration/index.ts";
import type { SnapshotReader, VmMemoryReader } from "../../snapshot/store/index.ts";
import { HrError } from "../../util/errors.ts";

/**
 * What a restore needs of one VM's snapshot to speak QEMU's migration protocol: the verbatim
 * configuration and device state, the RAM block list, and its pages from the store.
 */
export interface VmStreamSource {
  configuration: Buffer;
  ramStart: RamStart;
  deviceState: Buffer;
  memory: VmMemoryReader;
}

export async function vmStreamSource(snapshot: SnapshotReader, vm: string): Promise<VmStreamSource> {
  const [configuration, ramStartRaw, deviceState, memory] = await Promise.all([
    snapshot.configuration(vm),
    snapshot.ramStart(vm),
    snapshot.deviceState(vm),
    snapshot.memory(vm),
  ]);
  const reader = new MigrationStreamReader();
  const events = [...reader.push(encodeHeader()), ...reader.push(configuration), ...reader.push(ramStartRaw)];
  const start = events.find((event) => event.type === "ramBlocks");
  if (start?.type !== "ramBlocks") {
    throw new HrError("SNAPSHOT_CORRUPT", `VM ${vm}: ramstart.bin holds no RAM block list`);
  }
  const ramStart: RamStart = {
    sectionId: start.sectionId,
    instanceId: start.instanceId,
    version: start.version,
    totalBytes: start.totalBytes,
    blocks: start.blocks,
  };
  return { configuration, ramStart, deviceState, memory };
}

/**
 * Every page of every block in address order: stored pages with their data (read a checked chunk
 * at a time), the pages between them as zero records (the destination's ROM blocks are not zero).
 */
export async function* allPages(source: VmStreamSource): AsyncGenerator<PageRecord> {
  for await (const batch of pageBatches(source)) yield* batch;
}

/**
 * As `allPages`, a store chunk's worth at a time. The blocks in `omitZeroIn` get no zero records:
 * for a destination whose copy of them is known to be all zero (see full.ts).
 */
export async function* pageBatches(
  source: VmStreamSource,
  omitZeroIn: ReadonlySet<string> = new Set(),
): AsyncGenerator<PageRecord[]> {
  for (const block of source.ramStart.blocks) {
    const count = block.usedLength / 4096;
    const zeros = !omitZeroIn.has(block.id);
    let next = 0;
    for await (const stored of source.memory.chunkPages(block.id)) {
      const out: PageRecord[] = [];
      for (const page of stored) {
        if (zeros)
          for (; next < page.page; next += 1) out.push({ block: block.id, offset: next * 4096, zero: true });
        out.push({ block: block.id, offset: page.page * 4096, data: page.data });
        next = page.page + 1;
      }
      yield out;
    }
    if (!zeros) continue;
    const tail: PageRecord[] = [];
    for (; next < count; next += 1) tail.push({ block: block.id, offset: next * 4096, zero: true });
    if (tail.length > 0) yield tail;
  }
}
