/**
 * Ctrl-C during `npm run demo` leaves no process behind: the demo runs in its own process group
 * (as in a terminal) on a 2-VM spec; once it is snapshotting, the whole group gets SIGINT, as a
 * terminal's Ctrl-C sends it. The demo must exit 130 and its daemon and every QEMU must be gone.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { isAlive, Lab, ROOT, pairSpec } from "./fixture.ts";

describe("demo interrupted with Ctrl-C", () => {
  let lab: Lab | undefined;
  after(async () => lab?.cleanup());

  it("stops the daemon and every VM, whatever step it was in", async () => {
    lab = await Lab.create("hr-demo-int-");
    const spec = await lab.writeSpec(pairSpec("demo"));
    const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "src", "demo", "main.ts"), spec], {
      cwd: ROOT,
      env: lab.env(),
      detached: true, // its own process group, like a job in a terminal
      stdio: ["ignore", "pipe", "pipe"],
    });
    const pgid = child.pid;
    assert.ok(pgid !== undefined);
    let out = "";
    child.stderr.on("data", (chunk: Buffer) => (out += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`the demo never reached its snapshot: ${out}`)),
          180_000,
        );
        child.stdout.on("data", (chunk: Buffer) => {
          out += chunk.toString();
          if (out.includes("snapshot (consistent cut")) {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      const daemon = await lab.daemonPid();
      assert.ok(daemon !== undefined && isAlive(daemon), "the daemon runs");
      assert.ok((await lab.processes()).length >= 2, "its QEMUs run");
      process.kill(-pgid, "SIGINT");
      assert.equal(await exited, 130, out);
      assert.match(out, /interrupted: stopping the daemon and every VM/);
      assert.equal(isAlive(daemon), false, "daemon gone");
      assert.deepEqual(await lab.waitNoProcesses(10_000), [], "no QEMU left");
    } finally {
      if (child.exitCode === null) process.kill(-pgid, "SIGKILL");
    }
  });
});
