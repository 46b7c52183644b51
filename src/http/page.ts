/**
 * The web page of `hotrestore serve`: one HTML document with its script and stylesheet inlined
 * (assets/), so it needs nothing but the API it talks to.
 */
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { ORDERS } from "../restore/cluster/start-gate.ts";
import { STRATEGIES } from "../restore/vm/strategy.ts";
import { scriptJson } from "../report/html.ts";

const ASSETS = join(dirname(fileURLToPath(import.meta.url)), "assets");

export async function renderPage(): Promise<string> {
  const [script, style] = await Promise.all([
    readFile(join(ASSETS, "page.js"), "utf8"),
    readFile(join(ASSETS, "page.css"), "utf8"),
  ]);
  const config = { strategies: STRATEGIES, orders: ORDERS };
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>HotRestore</title>
<style>${style}</style>
</head>
<body>
<header><h1>HotRestore</h1><span id="conn" data-state="connecting">connecting…</span></header>
<main>
<section><h2>Cluster</h2><div id="cluster"><p>Loading…</p></div></section>
<section><h2>Snapshots <button id="snapshot-btn" type="button">Take snapshot</button></h2>
<div id="snapshots"><p>Loading…</p></div></section>
<section><h2>Activity</h2><div id="jobs"><p class="note">Nothing yet.</p></div></section>
</main>
<script id="hr-config" type="application/json">${scriptJson(config)}</script>
<script>${script.replaceAll(/<\/script/gi, "<\\/script")}</script>
</body>
</html>
`;
}
