/**
 * The HTTP face's own behaviour (token, schemas, jobs, SSE, limits) on a real server on port 0,
 * with a runner standing in for the daemon: what the daemon does is tested in
 * test/integration/web-page.test.ts against real VMs.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Action, Progress } from "../../../src/control/actions.ts";
import { MAX_BODY, startHttpFace, type HttpFace } from "../../../src/http/server.ts";
import { HrError } from "../../../src/util/errors.ts";

const TOKEN = "t0ken-for-tests";

describe("HTTP face", () => {
  let face: HttpFace;
  const seen: Action[] = [];
  let release: (() => void) | undefined;

  before(async () => {
    face = await startHttpFace({
      token: TOKEN,
      port: 0,
      run: async (action, progress: (note: Progress) => void) => {
        seen.push(action);
        if (action.type === "status") throw new HrError("NO_CLUSTER", "no cluster is running");
        if (action.type === "snapshots") return [];
        if (action.type === "snapshot-rm") throw new HrError("SNAPSHOT_NOT_FOUND", "no snapshot x");
        progress({ step: "load", vm: "a" });
        if (action.type === "restore") await new Promise<void>((resolve) => (release = resolve));
        progress({ step: "started", vm: "a" });
        return { ok: action.type };
      },
    });
  });
  after(async () => face.close());

  const base = (): string => `http://127.0.0.1:${face.port}`;
  const auth = { authorization: `Bearer ${TOKEN}` };

  it("refuses every route without the token, or with a wrong one", async () => {
    for (const path of ["/", "/api/status", "/api/snapshots", "/api/jobs", "/api/events"]) {
      assert.equal((await fetch(base() + path)).status, 401, path);
      const wrong = await fetch(base() + path, { headers: { authorization: `Bearer ${TOKEN}x` } });
      assert.equal(wrong.status, 401, path);
    }
    const post = await fetch(`${base()}/api/actions`, { method: "POST", body: '{"type":"down"}' });
    assert.equal(post.status, 401);
    assert.ok(!seen.some((action) => action.type === "down"), "nothing ran");
  });

  it("serves the page with ?token, self-contained", async () => {
    const page = await fetch(`${base()}/?token=${TOKEN}`);
    assert.equal(page.status, 200);
    const html = await page.text();
    assert.match(html, /<button id="snapshot-btn"/);
    assert.doesNotMatch(html, /<script[^>]+src=|<link[^>]+href=/);
  });

  it("answers status null when no cluster runs", async () => {
    const reply = await fetch(`${base()}/api/status`, { headers: auth });
    assert.equal(reply.status, 200);
    assert.equal(await reply.json(), null);
  });

  it("validates actions against the one schema, naming what is wrong", async () => {
    const bad = await fetch(`${base()}/api/actions`, {
      method: "POST",
      headers: auth,
      body: JSON.stringify({ type: "restore", name: "s", strategy: "teleport" }),
    });
    assert.equal(bad.status, 400);
    const body = (await bad.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, "ACTION_INVALID");
    assert.match(body.error.message, /strategy/);
    const notJson = await fetch(`${base()}/api/actions`, { method: "POST", headers: auth, body: "{" });
    assert.equal(notJson.status, 400);
    const huge = await fetch(`${base()}/api/actions`, {
      method: "POST",
      headers: auth,
      body: `{"type":"exec","vm":"a","command":"${"x".repeat(MAX_BODY)}"}`,
    });
    assert.equal(huge.status, 413);
  });

  it("runs a job, streams its progress and end over SSE, and keeps it", async () => {
    const controller = new AbortController();
    const events = await fetch(`${base()}/api/events?token=${TOKEN}`, { signal: controller.signal });
    assert.equal(events.headers.get("content-type"), "text/event-stream");
    const reader = (events.body as ReadableStream<Uint8Array>).getReader();
    let text = "";
    const until = async (pattern: RegExp): Promise<void> => {
      while (!pattern.test(text)) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`stream ended before ${String(pattern)}: ${text}`);
        text += Buffer.from(value).toString();
      }
    };
    await until(/hotrestore events/);

    const posted = await fetch(`${base()}/api/actions`, {
      method: "POST",
      headers: auth,
      body: JSON.stringify({ type: "restore", name: "s" }),
    });
    assert.equal(posted.status, 202);
    const job = (await posted.json()) as { id: number; state: string; action: Action };
    assert.equal(job.state, "running");
    assert.deepEqual(job.action, {
      type: "restore",
      name: "s",
      strategy: "hotrestore",
      order: "restore-line",
    });
    await until(/event: progress\ndata: .*"step":"load"/);
    release?.();
    await until(/event: job\ndata: .*"state":"done"/);
    controller.abort();

    const kept = (await (await fetch(`${base()}/api/jobs/${job.id}`, { headers: auth })).json()) as {
      state: string;
      result: unknown;
      progress: Progress[];
    };
    assert.equal(kept.state, "done");
    assert.deepEqual(kept.result, { ok: "restore" });
    assert.deepEqual(
      kept.progress.map((note) => note.step),
      ["load", "started"],
    );
    assert.equal((await fetch(`${base()}/api/jobs/999999`, { headers: auth })).status, 404);
  });

  it("?wait=1 answers with the ended job, errors included", async () => {
    const reply = await fetch(`${base()}/api/actions?wait=1`, {
      method: "POST",
      headers: auth,
      body: JSON.stringify({ type: "snapshot-rm", name: "x" }),
    });
    assert.equal(reply.status, 200);
    const job = (await reply.json()) as { state: string; error: { code: string } };
    assert.equal(job.state, "failed");
    assert.equal(job.error.code, "SNAPSHOT_NOT_FOUND");
  });
});
