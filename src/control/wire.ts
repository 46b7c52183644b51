import { z } from "zod";
import { HrError } from "../util/errors.ts";

/**
 * Control socket wire format (daemon <-> CLI): newline-delimited JSON, one object per line.
 *   request:  {"id": n, "action": {...}}
 *   progress: {"id": n, "progress": {...}}          zero or more, before the reply
 *   reply:    {"id": n, "ok": true, "result": ...}  or  {"id": n, "ok": false, "error": {code, message, hint?}}
 * Lines are at most MAX_LINE bytes; a longer line is a protocol error and closes the connection.
 */
export const MAX_LINE = 64 * 1024 * 1024;

export const requestSchema = z.strictObject({ id: z.number().int(), action: z.unknown() });

export interface WireError {
  code: string;
  message: string;
  hint?: string;
}

export type Reply =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: WireError }
  | { id: number; progress: unknown };

export function encodeLine(message: unknown): string {
  return `${JSON.stringify(message)}\n`;
}

/** Splits a byte stream into JSON lines; any chunking. */
export class LineDecoder {
  private pending = "";
  private readonly decoder = new TextDecoder("utf-8");

  push(chunk: Buffer): unknown[] {
    this.pending += this.decoder.decode(chunk, { stream: true });
    const out: unknown[] = [];
    let newline = this.pending.indexOf("\n");
    while (newline >= 0) {
      const line = this.pending.slice(0, newline);
      this.pending = this.pending.slice(newline + 1);
      if (line.trim() !== "") {
        try {
          out.push(JSON.parse(line) as unknown);
        } catch {
          throw new HrError("CONTROL_PROTOCOL", "control socket: a line is not valid JSON");
        }
      }
      newline = this.pending.indexOf("\n");
    }
    if (this.pending.length > MAX_LINE)
      throw new HrError("CONTROL_PROTOCOL", "control socket: line too long");
    return out;
  }
}
