import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encodeMessage, LineDecoder } from "../../../src/qmp/framing.ts";

/** A command as the fake server received it. */
export interface ReceivedCommand {
  execute: string;
  arguments?: Record<string, unknown>;
  id: unknown;
}

export interface FakeConnection {
  readonly socket: Socket;
  readonly commands: ReceivedCommand[];
  send(message: object): void;
  reply(command: ReceivedCommand, value: unknown): void;
  fail(command: ReceivedCommand, errorClass: string, desc: string): void;
  event(name: string, data?: Record<string, unknown>): void;
}

export type CommandHandler = (command: ReceivedCommand, connection: FakeConnection) => void;

export const GREETING = {
  QMP: {
    version: { qemu: { micro: 22, minor: 2, major: 7 }, package: "Debian 1:7.2+dfsg-7+deb12u18+b3" },
    capabilities: ["oob"],
  },
};

/**
 * A scripted QMP server on a temporary unix socket. It greets (unless told not to), answers
 * qmp_capabilities with `{}`, and hands every other command to `onCommand`, which may answer late,
 * out of order, or never.
 */
export class FakeQmpServer {
  readonly path: string;
  readonly connections: FakeConnection[] = [];
  onCommand: CommandHandler = () => undefined;
  greet = true;
  readonly #dir: string;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();

  private constructor(dir: string) {
    this.#dir = dir;
    this.path = join(dir, "qmp.sock");
    this.#server = createServer((socket) => this.#accept(socket));
  }

  /** Creates the server; `listen()` makes the socket appear (separate, to test connect retries). */
  static async create(): Promise<FakeQmpServer> {
    return new FakeQmpServer(await mkdtemp(join(tmpdir(), "hr-qmp-")));
  }

  static async start(): Promise<FakeQmpServer> {
    const server = await FakeQmpServer.create();
    await server.listen();
    return server;
  }

  listen(): Promise<void> {
    return new Promise((resolve) => this.#server.listen(this.path, resolve));
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    if (this.#server.listening) await new Promise((resolve) => this.#server.close(resolve));
    await rm(this.#dir, { recursive: true, force: true });
  }

  #accept(socket: Socket): void {
    this.#sockets.add(socket);
    socket.on("close", () => this.#sockets.delete(socket));
    socket.on("error", () => undefined);
    const connection: FakeConnection = {
      socket,
      commands: [],
      send: (message) => socket.write(encodeMessage(message)),
      reply: (command, value) => connection.send({ return: value, id: command.id }),
      fail: (command, errorClass, desc) =>
        connection.send({ id: command.id, error: { class: errorClass, desc } }),
      event: (name, data) => {
        const timestamp = { seconds: 1795649096, microseconds: 571326 };
        connection.send(data === undefined ? { timestamp, event: name } : { timestamp, event: name, data });
      },
    };
    this.connections.push(connection);
    const lines = new LineDecoder();
    socket.on("data", (chunk: Buffer) =>
      lines.push(chunk, (line) => {
        const command = JSON.parse(line) as ReceivedCommand;
        connection.commands.push(command);
        if (command.execute === "qmp_capabilities") connection.reply(command, {});
        else this.onCommand(command, connection);
      }),
    );
    if (this.greet) connection.send(GREETING);
  }
}
