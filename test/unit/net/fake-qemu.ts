import { once } from "node:events";
import { createConnection, type Socket } from "node:net";
import { writeEthernet } from "../../../src/net/ethernet.ts";
import { encodeFrame, FrameDecoder } from "../../../src/net/frame-stream.ts";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VirtualSwitch, type PortOptions, type SwitchOptions } from "../../../src/net/switch.ts";

/**
 * Plays QEMU's `-netdev stream,server=off` side: connects to a switch port socket, sends frames in
 * QEMU's framing and collects the frames the switch sends back.
 */
export class FakeQemu {
  readonly frames: Buffer[] = [];
  readonly socket: Socket;
  readonly closed: Promise<void>;
  #waiters: { count: number; resolve: () => void }[] = [];

  private constructor(socket: Socket) {
    this.socket = socket;
    const decoder = new FrameDecoder();
    socket.on("data", (chunk: Buffer) => {
      for (const frame of decoder.push(chunk)) this.frames.push(Buffer.from(frame));
      this.#wake();
    });
    socket.on("error", () => undefined);
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
  }

  /** Connects and waits until the switch has taken the connection on `port`. */
  static async connect(sw: VirtualSwitch, port: string, path: string): Promise<FakeQemu> {
    const accepted = new Promise<void>((resolve) => {
      const listener = (event: { port: string }): void => {
        if (event.port !== port) return;
        sw.off("port-connected", listener);
        resolve();
      };
      sw.on("port-connected", listener);
    });
    const socket = createConnection(path);
    await once(socket, "connect");
    await accepted;
    return new FakeQemu(socket);
  }

  send(...frames: Buffer[]): void {
    this.socket.write(Buffer.concat(frames.map(encodeFrame)));
  }

  /** Resolves once `count` frames in total have arrived (rejects after timeoutMs). */
  async waitFrames(count: number, timeoutMs = 3000): Promise<Buffer[]> {
    if (this.frames.length < count) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.#waiters.push({ count, resolve })),
        new Promise<void>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`timed out with ${this.frames.length} of ${count} frames`)),
            timeoutMs,
          );
        }),
      ]).finally(() => clearTimeout(timer));
    }
    return this.frames.slice(0, count);
  }

  close(): void {
    this.socket.destroy();
  }

  #wake(): void {
    const ready = this.#waiters.filter((waiter) => this.frames.length >= waiter.count);
    this.#waiters = this.#waiters.filter((waiter) => this.frames.length < waiter.count);
    for (const waiter of ready) waiter.resolve();
  }
}

export function mac(n: number): string {
  return `52:54:00:77:00:${n.toString(16).padStart(2, "0")}`;
}

/** A small non-IP frame whose payload says `tag`, so tests can tell frames apart. */
export function frame(src: string, dst: string, tag: string, etherType = 0x88b5): Buffer {
  return writeEthernet({ dst, src, etherType }, Buffer.from(tag));
}

export function tagOf(received: Buffer): string {
  return received.subarray(14).toString();
}

/** Polls `condition` every few milliseconds; rejects after timeoutMs. */
export async function until(condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A switch in a temporary directory with connected fake QEMUs; `close()` undoes everything. */
export class SwitchHarness {
  readonly sw: VirtualSwitch;
  readonly dir: string;
  readonly paths = new Map<string, string>();
  readonly #clients: FakeQemu[] = [];

  private constructor(sw: VirtualSwitch, dir: string) {
    this.sw = sw;
    this.dir = dir;
  }

  static async start(ports: string[], options: Partial<SwitchOptions> = {}): Promise<SwitchHarness> {
    const dir = await mkdtemp(join(tmpdir(), "hr-sw-"));
    const harness = new SwitchHarness(new VirtualSwitch({ ...options, dir: join(dir, "sw") }), dir);
    for (const port of ports) await harness.addPort(port);
    return harness;
  }

  async addPort(port: string, options: PortOptions = {}): Promise<string> {
    const path = await this.sw.addPort(port, options);
    this.paths.set(port, path);
    return path;
  }

  /** Connects a fake QEMU to `port`. */
  async connect(port: string): Promise<FakeQemu> {
    const path = this.paths.get(port);
    if (path === undefined) throw new Error(`no port ${port}`);
    const client = await FakeQemu.connect(this.sw, port, path);
    this.#clients.push(client);
    return client;
  }

  async close(): Promise<void> {
    for (const client of this.#clients) client.close();
    await this.sw.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}
