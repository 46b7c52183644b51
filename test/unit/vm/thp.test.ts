/**
 * The THP-off wrapper for post-copy destinations really turns transparent huge pages off for the
 * process it execs (the kernel reports it in /proc/<pid>/status), keeps the PID, and passes the
 * arguments through untouched.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { thpDisablePrefix } from "../../../src/vm/process.ts";

const run = promisify(execFile);

describe("THP-off wrapper", () => {
  it("execs the command with THP_enabled 0 and its arguments intact", async (t) => {
    const prefix = thpDisablePrefix();
    if (prefix.length === 0) {
      t.skip(`no prctl number known for ${process.arch}`);
      return;
    }
    const [perl, ...rest] = prefix;
    const { stdout } = await run(perl ?? "perl", [
      ...rest,
      "sh",
      "-c",
      'grep THP_enabled /proc/self/status; printf "%s|" "$@"',
      "sh",
      "a b",
      "$HOME;x",
      "",
    ]);
    assert.match(stdout, /THP_enabled:\s+0/);
    assert.match(stdout, /a b\|\$HOME;x\|\|$/);
  });

  it("is empty where prctl's number is unknown", () => {
    assert.deepEqual(thpDisablePrefix("ia32"), []);
  });
});
