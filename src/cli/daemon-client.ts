import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { STORE_ACTIONS, type ActionInput, type Progress } from "../control/actions.ts";
import { Controller } from "../control/controller.ts";
import { encodeLine, LineDecoder, type Reply } from "../control/wire.ts";
import { HrError } from "../util/errors.ts";
import { silentLogger } from "../util/log.ts";
import { cacheDir, guestDir, stateDir } from "../util/paths.ts";

const DAEMON_MAIN = join(dirname(fileURLToPath(import.meta.url)), "..", "daemon", "main.ts");
export const DAEMON_START_TIMEOUT_MS = 15_000;

export function daemonSocket(state = stateDir()): string {
  return join(state, "daemon.sock");
}

async function tryConnect(path: string): Promise<Socket | undefined> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once("connect", () => resolve(socket));
    socket.once("error", () => resolve(undefined));
  });
}

/** Connects to the running daemon; undefined if none runs. */
export async function connectDaemon(state = stateDir()): Promise<DaemonConnection | undefined> {
  const socket = await tryConnect(daemonSocket(state));
  return socket ? new DaemonConnection(socket, state) : undefined;
}

/** Connects to the daemon, starting it first if none runs. */
export async function ensureDaemon(state = stateDir()): Promise<DaemonConnection> {
  const existing = await connectDaemon(state);
  if (existing) return existing;
  await mkdir(state, { recursive: true, mode: 0o700 });
  const logFd = openSync(join(state, "daemon.out"), "a", 0o600);
  try {
    const child = spawn(process.execPath, ["--import", "tsx", DAEMON_MAIN], {
      detached: true,
      stdio: ["ignore", logFd, logFd],
      env: process.env,
      cwd: join(dirname(DAEMON_MAIN), "..", ".."),
    });
    child.unref();
  } finally {
    closeSync(logFd);
  }
  const deadline = Date.now() + DAEMON_START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const connection = await connectDaemon(state);
    if (connection) return connection;
    await sleep(100);
  }
  throw new HrError(
    "DAEMON_START_FAILED",
    `the daemon did not start within ${DAEMON_START_TIMEOUT_MS / 1000} s`,
    {
      hint: `see ${join(state, "daemon.out")} and ${join(state, "daemon.log")}`,
    },
  );
}

/** One connection to the daemon; requests are correlated by id. */
export class DaemonConnection {
  private readonly socket: Socket;
  private nextId = 1;
  private readonly pending = new Map<
    number,
    {
      resolve: (value: unknown) => void;
      reject: (error: Error) => void;
      progress: (note: Progress) => void;
      action: ActionInput;
      sentAt: number;
      lastNote?: Progress;
    }
  >();

  /** `state`: the daemon's state directory, where its supervisor leaves word of why it died. */
  constructor(socket: Socket, state = stateDir()) {
    this.socket = socket;
    const decoder = new LineDecoder();
    socket.on("data", (chunk: Buffer) => {
      for (const message of decoder.push(chunk)) this.dispatch(message as Reply);
    });
    socket.on("close", () => {
      for (const call of this.pending.values()) call.reject(daemonGone(state, call));
      this.pending.clear();
    });
    socket.on("error", () => undefined);
  }

  async request(action: ActionInput, progress: (note: Progress) => void = () => undefined): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, progress, action, sentAt: Date.now() });
      this.socket.write(encodeLine({ id, action }));
    });
  }

  close(): void {
    this.socket.end();
  }

  private dispatch(reply: Reply): void {
    const call = this.pending.get(reply.id);
    if (!call) return;
    if ("progress" in reply) {
      call.lastNote = reply.progress as Progress;
      call.progress(call.lastNote);
      return;
    }
    this.pending.delete(reply.id);
    if (reply.ok) call.resolve(reply.result);
    else
      call.reject(
        new HrError(
          reply.error.code,
          reply.error.message,
          reply.error.hint ? { hint: reply.error.hint } : {},
        ),
      );
  }
}

/**
 * The error for a request whose daemon died: what it was doing (the operation and its last
 * progress note, which names the VM), and why, when its supervisor left word (supervisor.ts).
 */
function daemonGone(
  state: string,
  call: { action: ActionInput; sentAt: number; lastNote?: Progress },
): HrError {
  const name = "name" in call.action && typeof call.action.name === "string" ? ` ${call.action.name}` : "";
  const note = call.lastNote;
  const step =
    note === undefined ? "" : ` (last step: ${note.step}${note.vm === undefined ? "" : ` VM ${note.vm}`})`;
  let why = "";
  try {
    const died = JSON.parse(readFileSync(join(state, "daemon.died"), "utf8")) as {
      at?: string;
      message?: string;
    };
    if (typeof died.message === "string" && Date.parse(died.at ?? "") >= call.sentAt - 1000)
      why = `: ${died.message}`;
  } catch {
    // no word left: killed from outside, or crashed
  }
  return new HrError("DAEMON_GONE", `the daemon died during ${call.action.type}${name}${step}${why}`, {
    hint: `every QEMU it ran died with it; see ${join(state, "daemon.log")}, then start again (\`hotrestore up\` or \`restore\`)`,
  });
}

/**
 * Runs one action where it belongs: through the daemon (started first for `up`); store actions
 * in this process when no daemon runs (the store needs none); `status` without a daemon is null.
 * Every face (CLI, HTTP) goes through here, so the daemon's Controller is the one behind both.
 */
export async function requestAction(
  action: ActionInput,
  progress: (note: Progress) => void = () => undefined,
  state = stateDir(),
): Promise<unknown> {
  const connection = action.type === "up" ? await ensureDaemon(state) : await connectDaemon(state);
  if (connection) {
    try {
      return await connection.request(action, progress);
    } finally {
      connection.close();
    }
  }
  if (action.type === "status") return null;
  if (!STORE_ACTIONS.has(action.type)) {
    throw new HrError("NO_CLUSTER", "no cluster is running", { hint: "hotrestore up <spec.json>" });
  }
  const controller = new Controller({
    stateDir: state,
    cacheDir: cacheDir(),
    guestDir: guestDir(),
    log: silentLogger(),
  });
  return controller.execute(action, progress);
}
