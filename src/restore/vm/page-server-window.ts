/**
 * Flow control for the page server's background pages by PING/PONG. A requested page waits
 * behind every byte already on its way to the destination: our socket queue, but also the
 * kernel's socket buffers (~208 KiB for a unix socket, which Node cannot shrink). So the server
 * numbers PINGs into the stream every `pingEveryBytes`; QEMU's listen thread answers each with
 * a PONG when it reaches it, which tells how far the destination has read. Background pages are
 * only written while fewer than `limitBytes` are unacknowledged, so the wait of an urgent page
 * is bounded by the window, wherever those bytes sit. Pure: the server writes the PINGs.
 *
 * PING numbers start at FIRST_PING, above the 1 and 3 of the preamble and the package.
 */
import { encodePing } from "../../migration/index.ts";

export const FIRST_PING = 1000;

export class PingWindow {
  readonly #limit: number;
  readonly #every: number;
  readonly #pending: { seq: number; at: number }[] = [];
  #seq = FIRST_PING;
  #written = 0;
  #pinged = 0;
  #acked = 0;

  constructor(limitBytes: number, pingEveryBytes: number) {
    this.#limit = limitBytes;
    this.#every = Math.max(1, Math.min(pingEveryBytes, limitBytes));
  }

  /** Bytes handed to the socket (pages, commands, PINGs). */
  written(bytes: number): void {
    this.#written += bytes;
  }

  /** Bytes written that no PONG has acknowledged yet. */
  get outstanding(): number {
    return this.#written - this.#acked;
  }

  /** More background bytes may go. */
  get open(): boolean {
    return this.outstanding < this.#limit;
  }

  /**
   * A PING to write now: when `pingEveryBytes` went out since the last one, or (`force`) when
   * anything did — before waiting for an acknowledgement, so that one will come.
   */
  pingDue(force: boolean): Buffer | undefined {
    const since = this.#written - this.#pinged;
    if (since === 0 || (!force && since < this.#every)) return undefined;
    const ping = encodePing(this.#seq);
    this.#written += ping.length;
    this.#pending.push({ seq: this.#seq, at: this.#written });
    this.#pinged = this.#written;
    this.#seq += 1;
    return ping;
  }

  /** A PONG arrived; true if it answered one of our PINGs. */
  acked(value: number): boolean {
    if (value < FIRST_PING) return false;
    let ours = false;
    while (this.#pending.length > 0 && this.#pending[0]!.seq <= value) {
      this.#acked = this.#pending.shift()!.at;
      ours = true;
    }
    return ours;
  }
}
