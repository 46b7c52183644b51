import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { describe, it } from "node:test";
import { ROOT } from "../../../src/cli/run-cli.ts";

/**
 * Issue 7 part 4: nothing on the host is ever run through a shell. Every child process is
 * started with `spawn` or `execFile` and an argv array; no `shell` option, no `exec`/`execSync`,
 * no `sh -c`. (Guest commands go to the guest's own shell through our agent: that is the feature.)
 */
async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && /\.(ts|js|mjs)$/.test(entry.name)) out.push(join(entry.parentPath, entry.name));
  }
  return out;
}

const ALLOWED = new Set(["spawn", "execFile", "type ChildProcess", "type SpawnOptions"]);

describe("no shell on the host", () => {
  it("src/, scripts/ and bin/ start processes with argv arrays only", async () => {
    const files = [
      ...(await sources(join(ROOT, "src"))),
      ...(await sources(join(ROOT, "scripts"))),
      ...(await sources(join(ROOT, "bin"))),
    ];
    assert.ok(files.length > 50);
    const problems: string[] = [];
    let importers = 0;
    for (const file of files) {
      const text = await readFile(file, "utf8");
      const where = relative(ROOT, file);
      if (/\bshell\s*:/.test(text)) problems.push(`${where}: a 'shell' option`);
      if (/\b(execSync|execFileSync|spawnSync)\b/.test(text)) problems.push(`${where}: a synchronous exec`);
      if (/require\(\s*["'](node:)?child_process["']\s*\)/.test(text))
        problems.push(`${where}: require(child_process)`);
      if (/import\s+\*\s+as\s+\w+\s+from\s+["'](node:)?child_process["']/.test(text)) {
        problems.push(`${where}: namespace import of child_process`);
      }
      for (const match of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*["'](node:)?child_process["']/g)) {
        importers += 1;
        for (const name of (match[1] ?? "")
          .split(",")
          .map((part) => part.trim())
          .filter(Boolean)) {
          if (!ALLOWED.has(name)) problems.push(`${where}: imports ${name} from child_process`);
        }
      }
      if (/(spawn|execFile)\(\s*["'](\/bin\/)?(ba|da)?sh["']/.test(text))
        problems.push(`${where}: runs a shell`);
    }
    assert.ok(importers >= 4, "the scan found the files that start processes");
    assert.deepEqual(problems, []);
  });
});
