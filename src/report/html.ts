/**
 * One self-contained HTML file per report: uPlot (its minified script and stylesheet, read from
 * node_modules), our page script and stylesheet (assets/), and the data as a JSON island. Nothing
 * is fetched when the file is opened, so it can be mailed or attached to a CI run.
 */
import { readFile, rename, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ReportData } from "./model.ts";

const ASSETS = join(dirname(fileURLToPath(import.meta.url)), "assets");
const require = createRequire(import.meta.url);

/** JSON safe inside a <script> element: no `</script>`, no `<!--`, no U+2028/2029 surprises. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replaceAll("<", "\\u003c")
    .replaceAll(">", "\\u003e")
    .replaceAll("&", "\\u0026")
    .replaceAll("\u2028", "\\u2028")
    .replaceAll("\u2029", "\\u2029");
}

function escapeHtml(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

/** A script's text inside <script>: only `</script` could end it early. */
function inlineScript(source: string): string {
  return source.replaceAll(/<\/script/gi, "<\\/script");
}

export async function renderReport(data: ReportData): Promise<string> {
  const uplotDir = dirname(require.resolve("uplot/dist/uPlot.iife.min.js"));
  const [uplotJs, uplotCss, pageJs, benchJs, pageCss] = await Promise.all([
    readFile(join(uplotDir, "uPlot.iife.min.js"), "utf8"),
    readFile(join(uplotDir, "uPlot.min.css"), "utf8"),
    readFile(join(ASSETS, "report.js"), "utf8"),
    readFile(join(ASSETS, "report-bench.js"), "utf8"),
    readFile(join(ASSETS, "report.css"), "utf8"),
  ]);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(data.title)}</title>
<style>${uplotCss}</style>
<style>${pageCss}</style>
</head>
<body>
<main id="report"><h1>${escapeHtml(data.title)}</h1><p>Loading…</p></main>
<script id="hr-data" type="application/json">${scriptJson(data)}</script>
<script>${inlineScript(uplotJs)}</script>
<script>${inlineScript(`${benchJs}\n${pageJs}`)}</script>
</body>
</html>
`;
}

/** Writes the report atomically (temp file + rename); returns the path. */
export async function writeReport(path: string, data: ReportData): Promise<string> {
  const html = await renderReport(data);
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, html);
  await rename(tmp, path);
  return path;
}
