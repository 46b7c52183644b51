/**
 * The HTML reports drawn by a real headless Chromium (Debian's, through playwright-core): every
 * chart renders without a script error, and picking another restore redraws the details.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { writeReport } from "../../src/report/html.ts";
import { DEFINITIONS } from "../../src/report/model.ts";
import { demoFixture } from "../unit/report/fixtures.ts";

describe("HTML reports in headless Chromium", () => {
  let browser: Browser;
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "hr-report-"));
    browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
  });
  after(async () => {
    await browser.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function open(file: string): Promise<{ page: Page; errors: string[] }> {
    const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(String(error)));
    page.on("console", (message) => {
      if (message.type() === "error") errors.push(message.text());
    });
    await page.goto(`file://${file}`);
    await page.waitForSelector("body[data-rendered]");
    return { page, errors };
  }

  it("draws the demo report: table, backoff comparison, latency vs memory, timeline, window, faults, flows", async () => {
    const data = await demoFixture();
    const file = await writeReport(join(dir, "demo.html"), data);
    const { page, errors } = await open(file);
    assert.equal(await page.getAttribute("body", "data-rendered"), "yes");
    assert.deepEqual(errors, []);
    // 2 backoff charts, latency vs memory, then per run: timeline, window, faults, flows.
    assert.equal(await page.locator(".uplot").count(), 7);
    const rows = await page.locator("table.figures").first().locator("tbody tr").count();
    assert.equal(rows, data.runs.length);
    const details = page.locator("#run-details h3").first();
    assert.match((await details.textContent()) ?? "", /hotrestore \/ restore-line/);
    await page.selectOption("#run-select", "0");
    assert.match((await details.textContent()) ?? "", new RegExp(data.runs[0]?.label ?? "?"));
    // full loads everything before start: no window, no faults, said in words instead of charts.
    assert.equal(await page.locator("#run-details .uplot").count(), 2);
    assert.deepEqual(errors, []);
    await page.close();
  });

  it("draws a bench report with its summary", async () => {
    const file = await writeReport(join(dir, "bench.html"), {
      kind: "bench",
      title: "bench restore",
      generatedAt: "2026-11-26T00:00:00Z",
      suite: "restore",
      host: { cpus: 2 },
      results: [
        { memoryMiB: 512, strategy: "full", restoreLatencyMs: 2900, ttrMs: 3022 },
        { memoryMiB: 512, strategy: "hotrestore", restoreLatencyMs: 266, ttrMs: 1696 },
        { memoryMiB: 1024, strategy: "full", restoreLatencyMs: 4559, ttrMs: 4612 },
        { memoryMiB: 1024, strategy: "hotrestore", restoreLatencyMs: 304, ttrMs: 1973 },
      ],
      summary: [
        { memoryMiB: 512, strategy: "hotrestore", restoreLatencyMs: { median: 266, min: 266, max: 266 } },
      ],
      definitions: DEFINITIONS,
    });
    const { page, errors } = await open(file);
    assert.equal(await page.getAttribute("body", "data-rendered"), "yes");
    assert.equal(await page.locator(".uplot").count(), 2);
    assert.deepEqual(errors, []);
    await page.close();
  });
});
