/**
 * pageBatches / allPages: every page of every block in address order, zero records between the
 * stored pages, none for a block named in omitZeroIn (full.ts's ram0).
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { PageRecord } from "../../../src/migration/index.ts";
import { allPages, pageBatches, type VmStreamSource } from "../../../src/restore/vm/stream-source.ts";

const PAGE = 4096;
/** ram0: 40 pages, stored at 3, 4 (chunk 0) and 33 (chunk 2); rom: 4 pages, stored at 1. */
const STORED: Record<string, number[][]> = { ram0: [[3, 4], [33]], rom: [[1]] };

function source(): VmStreamSource {
  const memory = {
    async *chunkPages(blockId: string) {
      for (const chunk of STORED[blockId] ?? []) {
        await Promise.resolve();
        yield chunk.map((page) => ({ page, data: Buffer.alloc(PAGE, page + 1) }));
      }
    },
  };
  return {
    configuration: Buffer.alloc(0),
    deviceState: Buffer.alloc(0),
    ramStart: {
      sectionId: 2,
      instanceId: 0,
      version: 4,
      totalBytes: 44 * PAGE,
      blocks: [
        { id: "ram0", usedLength: 40 * PAGE },
        { id: "rom", usedLength: 4 * PAGE },
      ],
    },
    memory,
  } as unknown as VmStreamSource;
}

const describePages = (records: readonly PageRecord[]): string[] =>
  records.map((r) => `${r.block}:${r.offset / PAGE}:${r.zero === true ? "z" : r.data?.[0]}`);

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}

void describe("stream source", () => {
  void it("allPages: every page once, in address order, zero records between stored ones", async () => {
    const pages = describePages(await collect(allPages(source())));
    assert.equal(pages.length, 44);
    assert.deepEqual(pages.slice(0, 6), [
      "ram0:0:z",
      "ram0:1:z",
      "ram0:2:z",
      "ram0:3:4",
      "ram0:4:5",
      "ram0:5:z",
    ]);
    assert.equal(pages[33], "ram0:33:34");
    assert.deepEqual(pages.slice(40), ["rom:0:z", "rom:1:2", "rom:2:z", "rom:3:z"]);
  });

  void it("pageBatches: one batch per chunk, and no zero record for a block in omitZeroIn", async () => {
    const batches = await collect(pageBatches(source(), new Set(["ram0"])));
    assert.deepEqual(batches.map(describePages), [
      ["ram0:3:4", "ram0:4:5"],
      ["ram0:33:34"],
      ["rom:0:z", "rom:1:2"],
      ["rom:2:z", "rom:3:z"],
    ]);
  });
});
