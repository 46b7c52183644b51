/**
 * loadLazy (strategies `lazy` and `workingset`) against a fake QMP server and a fake post-copy
 * destination: the QMP sequence, prepared → started → done, the report and the refined working
 * set, and failures naming the VM.
 */
import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";
import { QmpClient } from "../../../src/qmp/client.ts";
import { loadLazy, type LazyVm } from "../../../src/restore/vm/lazy.ts";
import { isHrError } from "../../../src/util/errors.ts";
import { FakeQmpServer, type ReceivedCommand } from "../qmp/fake-qmp-server.ts";
import { FakeDestination, fakeSnapshot, type FakeBlock, type FakeSnapshot } from "./page-server-fixture.ts";

const BLOCKS: FakeBlock[] = [
  { id: "ram0", pages: 1024, present: (page) => page % 3 !== 0 },
  { id: "pc.bios", pages: 16, present: () => true },
];

interface Rig {
  vm: LazyVm;
  fake: FakeDestination;
  snapshot: FakeSnapshot;
  qmp: FakeQmpServer;
  commands: ReceivedCommand[];
}

const rigs: { rig: Rig; client: QmpClient }[] = [];

/** `statuses`: what query-status answers, in turn (the last one repeats). */
async function rig(statuses: string[] = ["paused"]): Promise<Rig> {
  const snapshot = await fakeSnapshot(BLOCKS);
  const fake = await FakeDestination.listen(snapshot.dir);
  const qmp = await FakeQmpServer.start();
  const commands: ReceivedCommand[] = [];
  qmp.onCommand = (command, connection) => {
    commands.push(command);
    switch (command.execute) {
      case "query-status": {
        const status = statuses.length > 1 ? statuses.shift()! : statuses[0]!;
        connection.reply(command, { status, running: false, singlestep: false });
        return;
      }
      case "query-migrate":
        connection.reply(command, { status: "completed", "postcopy-blocktime": 12 });
        return;
      default:
        connection.reply(command, {});
    }
  };
  const client = await QmpClient.connect(qmp.path, { timeoutMs: 5_000 });
  const vm: LazyVm = { qmp: client, dir: snapshot.dir, spec: { name: "vm7" } };
  const made = { vm, fake, snapshot, qmp, commands };
  rigs.push({ rig: made, client });
  return made;
}

afterEach(async () => {
  for (const { rig: made, client } of rigs.splice(0)) {
    client.close();
    await made.qmp.close();
    await made.fake.close();
    await made.snapshot.cleanup();
  }
});

void describe("loadLazy", () => {
  void it("lazy: post-copy capabilities, migrate-incoming, prepared, started, done with a report", async () => {
    const { vm, fake, snapshot, commands } = await rig(["inmigrate", "inmigrate", "paused"]);
    const workingSet = [
      { blockId: "ram0", page: 500 },
      { blockId: "ram0", page: 501 },
    ];
    fake.autoShut = false;
    const load = loadLazy(vm, snapshot.source, { strategy: "lazy", workingSet });
    await load.prepared;
    assert.equal(commands.filter((command) => command.execute === "query-status").length, 3);
    const capabilities = commands.find((command) => command.execute === "migrate-set-capabilities");
    assert.deepEqual(capabilities?.arguments, {
      capabilities: [
        { capability: "postcopy-ram", state: true },
        { capability: "postcopy-blocktime", state: true },
      ],
    });
    const incoming = commands.find((command) => command.execute === "migrate-incoming");
    assert.equal(incoming?.arguments?.uri, `unix:${fake.path}`);
    load.markStarted();
    while (!fake.eof) await new Promise((resolve) => setTimeout(resolve, 5));
    fake.request("ram0", 900);
    fake.request("ram0", 501);
    fake.send({ type: "shut", error: 0 });
    const done = await load.done;
    const report = done.report;
    assert.equal(report.strategy, "lazy");
    assert.equal(report.prefetchPages, 0);
    assert.equal(report.blocktimeMs, 12);
    // 682 + 16 pages with data; ram0's 342 zero pages are left to the destination's discard
    assert.equal(report.server.pagesWritten, 698);
    assert.equal(report.server.pagesLeftZero, 342);
    assert.equal(report.faults, 2);
    assert.ok(report.startedMs !== undefined && report.doneMs !== undefined);
    assert.deepEqual(done.refinedWorkingSet, [
      { blockId: "ram0", page: 900 },
      { blockId: "ram0", page: 501 },
      { blockId: "ram0", page: 500 },
    ]);
    assert.equal(report.workingSet.basis, "faults");
    assert.equal(report.workingSet.recall, 1 / 2);
    assert.equal(load.report()?.server.pagesWritten, 698);
  });

  void it("workingset: the working set is loaded before LISTEN", async () => {
    const { vm, fake, snapshot } = await rig();
    const workingSet = [
      { blockId: "pc.bios", page: 3 },
      { blockId: "ram0", page: 77 },
    ];
    const load = loadLazy(vm, snapshot.source, { strategy: "workingset", workingSet });
    await load.prepared;
    const early = fake.pages.filter((page) => !page.postcopy).map((page) => `${page.block}:${page.page}`);
    assert.deepEqual(early, ["pc.bios:3", "ram0:77"]);
    load.markStarted();
    const done = await load.done;
    assert.equal(done.report.prefetchPages, 2);
    assert.equal(done.report.workingSet.basis, "prefetch-upper-bound");
  });

  void it("an aborted load fails prepared and done, naming the VM", async () => {
    const { vm, snapshot } = await rig();
    const load = loadLazy(vm, snapshot.source, { strategy: "lazy", workingSet: [] });
    load.abort("test over");
    await assert.rejects(
      load.prepared,
      (error) => isHrError(error, "PAGE_SERVER_ABORTED") && /^VM vm7: .*test over/.test(error.message),
    );
    await assert.rejects(load.done, (error) => isHrError(error, "PAGE_SERVER_ABORTED"));
  });

  void it("a destination that closes fails prepared and done with the page server's code", async () => {
    const { vm, fake, snapshot } = await rig();
    fake.closeOnFirstChunk = true;
    const load = loadLazy(vm, snapshot.source, { strategy: "lazy", workingSet: [] });
    await assert.rejects(
      load.prepared,
      (error) =>
        isHrError(error, "PAGE_SERVER_CLOSED") && /^VM vm7: lazy restore failed: /.test(error.message),
    );
    await assert.rejects(load.done, (error) => isHrError(error, "PAGE_SERVER_CLOSED"));
  });
});
