/**
 * Reports are one self-contained file: uPlot and our script inlined, the data as a JSON island
 * that survives hostile strings. The fixture is real: two runs of `npm run demo` (full/as-ready
 * and hotrestore/restore-line on TCG guests), window samples trimmed. The drawing itself is
 * checked in a real Chromium by test/integration/report-render.test.ts.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { renderReport, scriptJson } from "../../../src/report/html.ts";
import { demoFixture } from "./fixtures.ts";

function island(html: string): unknown {
  const match = /<script id="hr-data" type="application\/json">([\s\S]*?)<\/script>/.exec(html);
  assert.ok(match?.[1], "the data island is there");
  return JSON.parse(match[1]);
}

describe("HTML report", () => {
  it("is self-contained: no external script, stylesheet or image", async () => {
    const html = await renderReport(await demoFixture());
    assert.doesNotMatch(html, /<script[^>]+src=/);
    assert.doesNotMatch(html, /<link[^>]+href=/);
    assert.doesNotMatch(html, /<img[^>]+src="?https?:/);
    assert.match(html, /uPlot/);
  });

  it("carries the data unchanged", async () => {
    const data = await demoFixture();
    assert.deepEqual(island(await renderReport(data)), data);
  });

  it("keeps hostile strings inside the JSON island", async () => {
    const data = await demoFixture();
    const hostile = "</script><script>alert(1)</script><!-- \u2028\u2029 &amp;";
    const tricky = { ...data, title: hostile, snapshot: { ...data.snapshot, name: hostile } };
    const html = await renderReport(tricky);
    assert.equal(html.match(/<\/script>/g)?.length, 3, "only our three scripts end");
    assert.deepEqual(island(html), tricky);
    assert.doesNotMatch(html.split("<body>")[0] ?? "", /<script>alert/);
  });

  it("scriptJson escapes every character that could end or confuse a script element", () => {
    const text = scriptJson({ s: "<>&\u2028\u2029" });
    assert.doesNotMatch(text, /[<>&\u2028\u2029]/);
    assert.deepEqual(JSON.parse(text), { s: "<>&\u2028\u2029" });
  });
});
