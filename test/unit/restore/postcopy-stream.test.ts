/** The fixed parts of the post-copy stream, read back with MigrationStreamReader. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  decodeCommand,
  encodeConfiguration,
  MigrationStreamReader,
  type MigrationEvent,
} from "../../../src/migration/index.ts";
import { PageSpace } from "../../../src/restore/vm/page-server-space.ts";
import {
  DISCARD_RANGES_PER_COMMAND,
  encodePreamble,
  encodeRunPackage,
  encodeStreamEnd,
  planDiscards,
} from "../../../src/restore/vm/postcopy-stream.ts";

const BLOCKS = [
  { id: "ram0", usedLength: 64 * 4096 },
  { id: "pc.bios", usedLength: 4 * 4096 },
];
const SPACE = new PageSpace(BLOCKS);

function discardRanges(buffers: Buffer[]): { block: string; start: number; length: number }[] {
  const reader = new MigrationStreamReader();
  reader.push(Buffer.from("5145564d00000003", "hex"));
  return buffers.flatMap((buffer) =>
    reader.push(buffer).flatMap((event) => {
      if (event.type !== "command") return [];
      const command = decodeCommand(event.cmd, event.data);
      return command.cmd === "ramDiscard"
        ? command.ranges.map((range) => ({ block: command.block, ...range }))
        : [];
    }),
  );
}

void describe("post-copy stream parts", () => {
  void it("preamble: header, configuration, OPEN_RETURN_PATH, PING 1, ADVISE, ram START; then END and EOF", () => {
    const configuration = encodeConfiguration({ machine: "pc-i440fx-7.2", capabilities: [] });
    const ramStart = { sectionId: 2, instanceId: 0, version: 4, totalBytes: 68 * 4096, blocks: BLOCKS };
    const reader = new MigrationStreamReader();
    const events: MigrationEvent[] = [
      ...reader.push(encodePreamble({ configuration, ramStart, deviceState: Buffer.alloc(0) })),
      ...reader.push(encodeStreamEnd(2)),
    ];
    const kinds = events.map((event) =>
      event.type === "command" ? decodeCommand(event.cmd, event.data).cmd : event.type,
    );
    assert.deepEqual(kinds, [
      "header",
      "configuration",
      "openReturnPath",
      "ping",
      "advise",
      "ramBlocks",
      "ramSection",
      "eof",
    ]);
    const advise = events[4]!;
    assert.ok(advise.type === "command");
    assert.deepEqual(decodeCommand(advise.cmd, advise.data), {
      cmd: "advise",
      ramPageSize: 4096,
      targetPageSize: 4096,
    });
  });

  void it("package: LISTEN, the device state verbatim, PING 3, RUN", () => {
    const device = Buffer.from("04000000aa", "hex");
    const pkg = encodeRunPackage(device);
    assert.equal(pkg.readUInt32BE(5), pkg.length - 9);
    const body = pkg.subarray(9).toString("hex");
    assert.equal(body, "0800040000" + "04000000aa" + "080002000400000003" + "0800050000");
    assert.throws(() => encodeRunPackage(Buffer.from([0x07])));
  });

  void it("discards every page that is not prefetched, in ranges, per block", () => {
    const plan = planDiscards(SPACE, [SPACE.indexOf({ blockId: "ram0", page: 5 }), 6, 6, 64 + 3]);
    assert.deepEqual(plan.prefetch, [5, 6, 67]);
    assert.deepEqual(discardRanges(plan.discards), [
      { block: "ram0", start: 0, length: 5 * 4096 },
      { block: "ram0", start: 7 * 4096, length: 57 * 4096 },
      { block: "pc.bios", start: 0, length: 3 * 4096 },
    ]);
    assert.equal(plan.ranges, 3);
  });

  void it("nothing prefetched: one range per block", () => {
    const plan = planDiscards(SPACE, []);
    assert.deepEqual(discardRanges(plan.discards), [
      { block: "ram0", start: 0, length: 64 * 4096 },
      { block: "pc.bios", start: 0, length: 4 * 4096 },
    ]);
  });

  void it("everything prefetched: one page is given up so that one discard remains (7.2 needs one)", () => {
    const all = Array.from({ length: SPACE.total }, (_, i) => i);
    const plan = planDiscards(SPACE, all);
    assert.equal(plan.prefetch.length, SPACE.total - 1);
    assert.deepEqual(discardRanges(plan.discards), [{ block: "pc.bios", start: 3 * 4096, length: 4096 }]);
  });

  void it("splits long range lists over several commands", () => {
    const big = new PageSpace([{ id: "ram0", usedLength: 2 * (DISCARD_RANGES_PER_COMMAND + 10) * 4096 }]);
    const everyOther = Array.from({ length: DISCARD_RANGES_PER_COMMAND + 10 }, (_, i) => 2 * i);
    const plan = planDiscards(big, everyOther);
    assert.equal(plan.discards.length, 2);
    assert.ok(plan.discards.every((command) => command.length < 65_536));
    assert.equal(discardRanges(plan.discards).length, DISCARD_RANGES_PER_COMMAND + 10);
  });
});
