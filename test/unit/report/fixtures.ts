import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { ClusterReportData } from "../../../src/report/model.ts";

/** Real report data: two runs of `npm run demo` on TCG guests (window samples trimmed to 40). */
export async function demoFixture(): Promise<ClusterReportData> {
  const text = await readFile(join(import.meta.dirname, "demo-report.fixture.json"), "utf8");
  return JSON.parse(text) as ClusterReportData;
}
