/**
 * `hotrestore serve` — the HTTP face: the same actions as the CLI (control/actions.ts), JSON in and
 * out, handed to the daemon's Controller (through cli/daemon-client's requestAction), live progress
 * over Server-Sent Events, and a web page. Bound to 127.0.0.1; every request needs the token
 * printed at start (`Authorization: Bearer <token>`, or `?token=` for the page and the event
 * stream, which a browser cannot give headers).
 *
 *   GET  /                      the web page (cluster, snapshots, snapshot and restore buttons, progress)
 *   GET  /api/status            cluster status with workload statistics, or null when none runs
 *   GET  /api/snapshots         the snapshot list
 *   POST /api/actions           body: one action (schema: control/actions.ts) → 202 {job}; with
 *                               ?wait=1 → 200 {job} once it ended (its result or error inside)
 *   GET  /api/jobs, /api/jobs/N the jobs (last 100) with their progress notes and outcome
 *   GET  /api/events            SSE: `job` (started / ended, without notes) and `progress` events
 */
import { timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { actionSchema } from "../control/actions.ts";
import { HrError, isHrError } from "../util/errors.ts";
import { Jobs, type Runner } from "./jobs.ts";
import { renderPage } from "./page.ts";

export const MAX_BODY = 1 << 20;
const SSE_KEEPALIVE_MS = 15_000;

export interface HttpFace {
  server: Server;
  url: string;
  port: number;
  jobs: Jobs;
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

function tokenMatches(given: string | null | undefined, token: string): boolean {
  if (!given) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
    "cache-control": "no-store",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new HttpError(413, "BODY_TOO_LARGE", `request body over ${MAX_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown;
  } catch {
    throw new HttpError(400, "BAD_JSON", "the request body is not JSON");
  }
}

export async function startHttpFace(options: {
  token: string;
  run: Runner;
  port?: number;
  host?: string;
}): Promise<HttpFace> {
  const jobs = new Jobs(options.run);
  const host = options.host ?? "127.0.0.1";
  const page = await renderPage();
  const streams = new Set<ServerResponse>();

  const authorized = (req: IncomingMessage, url: URL): boolean => {
    const header = req.headers.authorization;
    const bearer = header?.startsWith("Bearer ") ? header.slice(7) : undefined;
    return tokenMatches(bearer ?? url.searchParams.get("token"), options.token);
  };

  const events = (req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(200, {
      "content-type": "text/event-stream",
      "cache-control": "no-store",
      connection: "keep-alive",
    });
    res.write(": hotrestore events\n\n");
    streams.add(res);
    const unsubscribe = jobs.subscribe((event) => {
      res.write(`event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
    });
    const keepalive = setInterval(() => res.write(": keepalive\n\n"), SSE_KEEPALIVE_MS);
    req.on("close", () => {
      clearInterval(keepalive);
      unsubscribe();
      streams.delete(res);
    });
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? "/", "http://localhost");
    if (!authorized(req, url)) {
      throw new HttpError(401, "UNAUTHORIZED", "missing or wrong token (the one `hotrestore serve` printed)");
    }
    const route = `${req.method ?? "GET"} ${url.pathname}`;
    if (route === "GET /") {
      res.writeHead(200, {
        "content-type": "text/html; charset=utf-8",
        "cache-control": "no-store",
        "content-security-policy":
          "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
      });
      res.end(page);
      return;
    }
    if (route === "GET /api/status") {
      // No cluster (none booted, or a restore replacing it right now) is a state, not an error.
      const status = await options
        .run({ type: "status", workloads: true }, () => undefined)
        .catch((error: unknown) => {
          if (isHrError(error, "NO_CLUSTER")) return null;
          throw error;
        });
      sendJson(res, 200, status);
      return;
    }
    if (route === "GET /api/snapshots") {
      sendJson(res, 200, await options.run({ type: "snapshots" }, () => undefined));
      return;
    }
    if (route === "GET /api/events") {
      events(req, res);
      return;
    }
    if (route === "GET /api/jobs") {
      sendJson(res, 200, jobs.list());
      return;
    }
    const jobMatch = /^GET \/api\/jobs\/(\d+)$/.exec(route);
    if (jobMatch) {
      const job = jobs.get(Number(jobMatch[1]));
      if (!job) throw new HttpError(404, "NO_SUCH_JOB", `no job ${jobMatch[1]}`);
      sendJson(res, 200, job);
      return;
    }
    if (route === "POST /api/actions") {
      const parsed = actionSchema.safeParse(await readBody(req));
      if (!parsed.success) {
        const issues = parsed.error.issues.map(
          (issue) => `${issue.path.join(".") || "action"}: ${issue.message}`,
        );
        throw new HttpError(400, "ACTION_INVALID", `invalid action: ${issues.join("; ")}`);
      }
      const { job, ended } = jobs.start(parsed.data);
      if (url.searchParams.get("wait") === "1") sendJson(res, 200, await ended);
      else sendJson(res, 202, job);
      return;
    }
    throw new HttpError(404, "NOT_FOUND", `no route ${route}`);
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (res.headersSent) {
        res.end();
        return;
      }
      if (error instanceof HttpError) {
        sendJson(res, error.status, { error: { code: error.code, message: error.message } });
      } else if (error instanceof HrError) {
        sendJson(res, error.code === "NO_CLUSTER" ? 409 : 500, { error: error.toJSON() });
      } else {
        sendJson(res, 500, { error: { code: "INTERNAL", message: String(error) } });
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    server,
    port,
    url: `http://${host}:${port}/?token=${encodeURIComponent(options.token)}`,
    jobs,
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of streams) res.end();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
