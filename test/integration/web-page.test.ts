/**
 * The web page of `hotrestore serve` in a real headless Chromium (Debian's, driven by
 * playwright-core) against a real 2-VM cluster: it shows the cluster, takes a snapshot, restores
 * it, and shows the restore finishing with its figures.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { access } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { chromium, type Browser } from "playwright-core";
import { isAlive, Lab, ROOT, pairSpec } from "./fixture.ts";

const CHROMIUM = "/usr/bin/chromium";

async function startServe(lab: Lab): Promise<{ child: ChildProcess; url: string; token: string }> {
  const child = spawn(process.execPath, [join(ROOT, "bin", "hotrestore.js"), "serve", "--port", "0"], {
    env: lab.env(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stderr?.on("data", (chunk: Buffer) => (err += chunk.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve printed no URL in 30 s: ${out} ${err}`)), 30_000);
    child.once("exit", (code) => reject(new Error(`serve exited ${String(code)}: ${err}`)));
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const url = /web page: (http:\/\/127\.0\.0\.1:\d+\/\?token=\S+)/.exec(out)?.[1];
      const token = /Bearer <token>\): (\S+)/.exec(out)?.[1];
      if (url && token) {
        clearTimeout(timer);
        resolve({ child, url, token });
      }
    });
  });
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  const pid = child?.pid;
  if (pid === undefined || !isAlive(pid) || child?.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(timer);
}

describe("web page (hotrestore serve) in headless Chromium", () => {
  let lab: Lab;
  let serve: Awaited<ReturnType<typeof startServe>> | undefined;
  let browser: Browser | undefined;

  before(async () => {
    await access(CHROMIUM).catch(() => {
      throw new Error(`${CHROMIUM} is missing: run 'bash scripts/setup.sh --browser' (npm test does)`);
    });
    lab = await Lab.create("hr-web-");
    const spec = await lab.writeSpec(pairSpec("web"));
    const up = await lab.cli(["up", spec]);
    assert.equal(up.code, 0, `up failed: ${up.stderr}`);
    serve = await startServe(lab);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  });

  after(async () => {
    await browser?.close().catch(() => undefined);
    await stop(serve?.child);
    await lab.cleanup();
  });

  it("refuses API requests without the right token", async () => {
    const base = new URL((serve as NonNullable<typeof serve>).url);
    base.search = "";
    const none = await fetch(new URL("/api/status", base));
    assert.equal(none.status, 401);
    const wrong = await fetch(new URL("/api/status", base), { headers: { authorization: "Bearer nope" } });
    assert.equal(wrong.status, 401);
    const page = await fetch(base);
    assert.equal(page.status, 401);
    const right = await fetch(new URL("/api/status", base), {
      headers: { authorization: `Bearer ${(serve as NonNullable<typeof serve>).token}` },
    });
    assert.equal(right.status, 200);
  });

  it("shows the cluster, takes a snapshot, restores it and shows the restore finishing", async () => {
    const page = await (browser as Browser).newPage();
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    page.on("console", (message) => {
      if (message.type() === "error") errors.push(message.text());
    });
    await page.goto((serve as NonNullable<typeof serve>).url);

    await page.waitForSelector('#cluster tr[data-vm="a"] .state-running', { timeout: 30_000 });
    await page.waitForSelector('#cluster tr[data-vm="b"] .state-running', { timeout: 30_000 });
    await page.waitForSelector('#conn[data-state="live"]', { timeout: 30_000 });

    await page.click("#snapshot-btn");
    await page.waitForSelector('.job[data-type="snapshot"][data-state="done"]', { timeout: 120_000 });
    const row = await page.waitForSelector("#snapshots tr[data-snapshot]", { timeout: 30_000 });
    const name = await row.getAttribute("data-snapshot");
    assert.ok(name, "the snapshot is listed");

    await row.$eval('select[name="strategy"]', (select) => {
      (select as unknown as { value: string }).value = "hotrestore";
    });
    await page.click(`button.restore[data-name="${name}"]`);
    await page.waitForSelector('.job[data-type="restore"][data-state="running"]', { timeout: 30_000 });
    const done = await page.waitForSelector('.job[data-type="restore"][data-state="done"]', {
      timeout: 300_000,
    });
    const text = (await done.textContent()) ?? "";
    assert.match(text, /restore finished: every VM running \d+(\.\d+)? ms after the command/);
    assert.match(text, /hotrestore, restore-line/);

    // The page followed the restore live: the job kept the progress notes the daemon streamed.
    const jobs = (await (
      await fetch(new URL("/api/jobs", (serve as NonNullable<typeof serve>).url), {
        headers: { authorization: `Bearer ${(serve as NonNullable<typeof serve>).token}` },
      })
    ).json()) as { action: { type: string }; progress: { step: string; vm?: string }[] }[];
    const restore = jobs.find((job) => job.action.type === "restore");
    assert.ok(restore, "the restore job is listed");
    const started = restore.progress.filter((note) => note.step === "started").map((note) => note.vm);
    assert.deepEqual(started.sort(), ["a", "b"]);
    await page.waitForSelector('#cluster tr[data-vm="a"] .state-running', { timeout: 30_000 });
    assert.deepEqual(errors, []);
    await page.close();
  });
});
