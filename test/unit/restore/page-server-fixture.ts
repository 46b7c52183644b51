/**
 * A fake snapshot (pages in memory and in raw files) and a fake post-copy destination for the
 * page server's unit tests: the destination listens on a temp unix socket, parses everything it
 * receives with MigrationStreamReader, answers PINGs (PONG 3 once the package arrived), sends the
 * page requests a test asks for, and SHUT 0 after EOF.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  decodeCommand,
  encodeConfiguration,
  encodeReturnPathMessage,
  MigrationStreamReader,
  type DecodedCommand,
  type RamStart,
  type ReturnPathMessage,
} from "../../../src/migration/index.ts";
import type { PageServerSource } from "../../../src/restore/vm/page-server-read.ts";
import { HrError } from "../../../src/util/errors.ts";

export const PAGE = 4096;

export interface FakeBlock {
  id: string;
  pages: number;
  /** Pages holding data (the rest are zero). */
  present: (page: number) => boolean;
}

export interface FakeSnapshot {
  source: PageServerSource;
  dir: string;
  /** Expected data of a page (zeros for pages not present). */
  data(blockId: string, page: number): Buffer;
  /** readPage calls so far. */
  reads: number;
  /** checkChunkSync calls so far (with `syncCheck`). */
  syncChecks: number;
  cleanup(): Promise<void>;
}

/** Page content: block index, page number and a pattern, never all zero. */
function pageData(blockIndex: number, page: number): Buffer {
  const out = Buffer.alloc(PAGE, ((page * 7 + blockIndex) % 251) | 1);
  out.writeUInt32BE(blockIndex, 0);
  out.writeUInt32BE(page, 4);
  return out;
}

export async function fakeSnapshot(
  blocks: FakeBlock[],
  options: {
    corrupt?: (blockId: string, page: number) => boolean;
    withRawFiles?: boolean;
    /** Offer checkChunkSync, as the store does. */
    syncCheck?: boolean;
  } = {},
): Promise<FakeSnapshot> {
  const dir = await mkdtemp(join(tmpdir(), "hr-ps-"));
  const raw = new Map<string, string>();
  if (options.withRawFiles ?? true) {
    for (const [index, block] of blocks.entries()) {
      const image = Buffer.alloc(block.pages * PAGE);
      for (let page = 0; page < block.pages; page += 1) {
        if (block.present(page)) pageData(index, page).copy(image, page * PAGE);
      }
      const path = join(dir, `${index}.raw`);
      await writeFile(path, image);
      raw.set(block.id, path);
    }
  }
  const byId = new Map(blocks.map((block, index) => [block.id, { block, index }]));
  const find = (blockId: string): { block: FakeBlock; index: number } => {
    const found = byId.get(blockId);
    if (found === undefined) throw new Error(`no block ${blockId}`);
    return found;
  };
  const ramStart: RamStart = {
    sectionId: 2,
    instanceId: 0,
    version: 4,
    totalBytes: blocks.reduce((sum, block) => sum + block.pages * PAGE, 0),
    blocks: blocks.map((block) => ({ id: block.id, usedLength: block.pages * PAGE })),
  };
  const snapshot: FakeSnapshot = {
    dir,
    reads: 0,
    syncChecks: 0,
    data(blockId, page) {
      const { block, index } = find(blockId);
      return block.present(page) ? pageData(index, page) : Buffer.alloc(PAGE);
    },
    source: {
      configuration: encodeConfiguration({ machine: "pc-i440fx-7.2", capabilities: [] }),
      ramStart,
      deviceState: Buffer.concat([Buffer.from([0x04]), Buffer.alloc(100, 0xab)]),
      memory: {
        isPresent: (blockId, page) => find(blockId).block.present(page),
        readPage: async (blockId, page) => {
          snapshot.reads += 1;
          await new Promise((resolve) => setImmediate(resolve));
          if (options.corrupt?.(blockId, page) === true) {
            throw new HrError("SNAPSHOT_CORRUPT", `snapshot s/ram/${blockId}.raw: chunk 0 checksum mismatch`);
          }
          return snapshot.data(blockId, page);
        },
        ...(raw.size > 0 ? { rawPath: (blockId: string) => raw.get(blockId) ?? "" } : {}),
        ...(options.syncCheck === true
          ? {
              checkChunkSync: (blockId: string, page: number) => {
                snapshot.syncChecks += 1;
                if (options.corrupt?.(blockId, page) === true) {
                  throw new HrError(
                    "SNAPSHOT_CORRUPT",
                    `snapshot s/ram/${blockId}.raw: chunk 0 checksum mismatch`,
                  );
                }
              },
            }
          : {}),
      },
    },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
  return snapshot;
}

export interface ReceivedPage {
  block: string;
  page: number;
  kind: "zero" | "data";
  data: Buffer | undefined;
  /** Pages received before this one. */
  seq: number;
  /** Received after the package. */
  postcopy: boolean;
}

export class FakeDestination {
  readonly path: string;
  readonly #server: Server;
  socket: Socket | undefined;
  readonly reader = new MigrationStreamReader();
  readonly commands: DecodedCommand[] = [];
  readonly pages: ReceivedPage[] = [];
  readonly duplicates: string[] = [];
  readonly #seen = new Set<string>();
  package: Buffer | undefined;
  eof = false;
  bytesReceived = 0;
  /** Answer EOF with SHUT 0 (default true). */
  autoShut = true;
  /** Called after each chunk is parsed. */
  onChunk: (() => void) | undefined;
  /** Close the connection on the first bytes received, before answering anything. */
  closeOnFirstChunk = false;
  error: unknown;

  private constructor(path: string, server: Server) {
    this.path = path;
    this.#server = server;
  }

  static async listen(dir: string): Promise<FakeDestination> {
    const path = join(dir, "incoming.sock");
    const server = createServer();
    const fake = new FakeDestination(path, server);
    server.on("connection", (socket) => fake.#accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, () => resolve());
    });
    return fake;
  }

  /** A client socket connected to this destination (what the page server writes to). */
  async connect(): Promise<Socket> {
    const socket = createConnection({ path: this.path });
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", () => resolve());
      socket.once("error", reject);
    });
    while (this.socket === undefined) await new Promise((resolve) => setImmediate(resolve));
    return socket;
  }

  send(message: ReturnPathMessage): void {
    this.socket?.write(encodeReturnPathMessage(message));
  }

  request(block: string, page: number, pages = 1): void {
    this.send({ type: "reqPages", block, start: page * PAGE, length: pages * PAGE, withId: true });
  }

  has(block: string, page: number): boolean {
    return this.#seen.has(`${block}:${page}`);
  }

  /** Sequence number of a received page (-1 if not received). */
  seqOf(block: string, page: number): number {
    return this.pages.find((p) => p.block === block && p.page === page)?.seq ?? -1;
  }

  async close(): Promise<void> {
    this.socket?.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(socket: Socket): void {
    this.socket = socket;
    socket.on("error", () => undefined);
    socket.on("data", (chunk: Buffer) => {
      if (this.closeOnFirstChunk) {
        socket.destroy();
        return;
      }
      this.bytesReceived += chunk.length;
      try {
        this.#parse(chunk);
      } catch (error) {
        this.error = error;
        socket.destroy();
      }
      this.onChunk?.();
    });
  }

  #parse(chunk: Buffer): void {
    for (const event of this.reader.push(chunk)) {
      switch (event.type) {
        case "command": {
          const command = decodeCommand(event.cmd, event.data);
          this.commands.push(command);
          if (command.cmd === "ping") this.send({ type: "pong", value: command.value });
          break;
        }
        case "packaged": {
          this.package = event.data;
          // LISTEN, device state, PING 3, RUN: answer PONG 3 as the real destination does.
          const ping = event.data.subarray(event.data.length - 14, event.data.length - 5);
          this.send({ type: "pong", value: ping.readUInt32BE(5) });
          break;
        }
        case "page": {
          const key = `${event.block}:${event.offset / PAGE}`;
          if (this.#seen.has(key)) this.duplicates.push(key);
          this.#seen.add(key);
          this.pages.push({
            block: event.block,
            page: event.offset / PAGE,
            kind: event.kind,
            data: event.data,
            seq: this.pages.length,
            postcopy: this.package !== undefined,
          });
          break;
        }
        case "eof":
          this.eof = true;
          if (this.autoShut) this.send({ type: "shut", error: 0 });
          break;
        default:
          break;
      }
    }
  }
}
