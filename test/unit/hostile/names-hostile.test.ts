import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cli } from "../../../src/cli/run-cli.ts";
import { Controller } from "../../../src/control/controller.ts";
import { SnapshotStore } from "../../../src/snapshot/store/index.ts";
import { HrError } from "../../../src/util/errors.ts";
import { silentLogger } from "../../../src/util/log.ts";

/**
 * Issue 7 part 4, names and paths from the CLI and the control API: snapshot names with path
 * traversal or shell metacharacters are refused with SNAPSHOT_BAD_NAME by the store, by every
 * controller action and by the CLI before it starts a daemon; nothing outside the store is
 * touched. Paths the daemon writes (captures) must be absolute.
 */
const HOSTILE_NAMES = [
  "../x",
  "..",
  ".",
  "a/b",
  "../../victim",
  "/etc/passwd",
  "a;rm -rf x",
  "$(touch pwned)",
  "`id`",
  "a b",
  "a\nb",
  "a\0b",
  "",
  "Snap",
  ".hidden",
  "-rf",
  "x".repeat(65),
  "snäp",
];

let home = "";
let victim = "";
before(async () => {
  home = await mkdtemp(join(tmpdir(), "hr-hostile-names-"));
  // a directory next to the store that a traversal would reach: <home>/victim
  victim = join(home, "victim");
  await mkdir(victim);
  await writeFile(join(victim, "keep"), "keep");
});
after(async () => {
  await rm(home, { recursive: true, force: true });
});

async function rejectsBadName(promise: Promise<unknown>, name: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof HrError, `${JSON.stringify(name)}: ${String(error)}`);
    assert.equal(error.code, "SNAPSHOT_BAD_NAME", `${JSON.stringify(name)}: ${error.message}`);
    return true;
  });
}

async function victimIntact(): Promise<void> {
  assert.deepEqual(await readdir(victim), ["keep"]);
}

describe("snapshot names", () => {
  it("the store refuses every hostile name on every operation", async () => {
    const store = new SnapshotStore(join(home, "snapshots"));
    for (const name of HOSTILE_NAMES) {
      assert.throws(
        () => store.pathOf(name),
        (error) => error instanceof HrError && error.code === "SNAPSHOT_BAD_NAME",
      );
      await rejectsBadName(store.begin(name), name);
      await rejectsBadName(store.open(name), name);
      await rejectsBadName(store.verify(name), name);
      await rejectsBadName(store.inspect(name), name);
      await rejectsBadName(store.remove(name), name);
    }
    await victimIntact();
    assert.equal(existsSync(join(home, "snapshots")), false, "nothing was created");
  });

  it("every control action that takes a snapshot name refuses them, a cluster or not", async () => {
    const controller = new Controller({
      stateDir: home,
      cacheDir: join(home, "cache"),
      guestDir: join(home, "guest"),
      log: silentLogger(),
    });
    for (const name of HOSTILE_NAMES.filter((candidate) => candidate.length <= 64)) {
      for (const type of [
        "snapshot-inspect",
        "snapshot-verify",
        "snapshot-graph",
        "snapshot-rm",
        "restore",
      ]) {
        await rejectsBadName(controller.execute({ type, name }), `${type} ${name}`);
      }
      await rejectsBadName(controller.execute({ type: "snapshot", name }), `snapshot ${name}`);
    }
    await victimIntact();
  });

  it("the CLI refuses them before it starts a daemon", async () => {
    for (const args of [
      ["restore", "../victim"],
      ["restore", "a;rm -rf ~"],
      ["snapshot", "--name", "../victim"],
      ["snapshot", "verify", "../victim"],
      ["snapshot", "rm", "../../victim"],
    ]) {
      const run = await cli(home, args, 60_000);
      assert.equal(run.code, 1, `${args.join(" ")}: ${run.stderr}`);
      assert.match(run.stderr, /hotrestore: invalid snapshot name/, args.join(" "));
      assert.equal(existsSync(join(home, "daemon.sock")), false, `${args.join(" ")} started a daemon`);
    }
    await victimIntact();
  });
});

describe("paths the daemon writes", () => {
  const controller = (): Controller =>
    new Controller({
      stateDir: home,
      cacheDir: join(home, "cache"),
      guestDir: join(home, "guest"),
      log: silentLogger(),
    });

  for (const file of ["capture.pcap", "../capture.pcap", "relative/dir/x.pcap", "/tmp/a\0b.pcap", ""]) {
    it(`a capture file ${JSON.stringify(file)} is refused: it must be an absolute path`, async () => {
      await assert.rejects(
        controller().execute({ type: "capture", vm: "a", file, seconds: 1 }),
        (error: unknown) => error instanceof HrError && error.code === "ACTION_INVALID",
      );
    });
  }

  it("a restore capture directory must be absolute too", async () => {
    await assert.rejects(
      controller().execute({ type: "restore", name: "s1", capture: "pcaps" }),
      (error: unknown) => error instanceof HrError && /absolute path/.test(error.message),
    );
  });
});
