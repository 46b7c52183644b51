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

/** Every page of every block in address order: stored pages with their data, the rest as zero records. */
export async function* allPages(source: VmStreamSource): AsyncGenerator<PageRecord> {
  for (const block of source.ramStart.blocks) {
    const count = block.usedLength / 4096;
    for (let page = 0; page < count; page += 1) {
      if (source.memory.isPresent(block.id, page)) {
        yield { block: block.id, offset: page * 4096, data: await source.memory.readPage(block.id, page) };
      } else {
        yield { block: block.id, offset: page * 4096, zero: true };
      }
    }
  }
}
