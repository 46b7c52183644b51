import { pino, type Logger } from "pino";

/** A pino logger writing JSON lines to `file` (the daemon's log), or a silent one. */
export function fileLogger(file: string, level = process.env.HOTRESTORE_LOG_LEVEL ?? "info"): Logger {
  return pino(
    { level, base: { pid: process.pid } },
    pino.destination({ dest: file, mkdir: true, sync: true }),
  );
}

export function silentLogger(): Logger {
  return pino({ level: "silent" });
}

export type { Logger };
