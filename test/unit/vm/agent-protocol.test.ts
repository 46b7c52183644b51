import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { AgentClient } from "../../../src/vm/agent-client.ts";
import {
  AgentDecoder,
  FRAME_MAX,
  encodeMessage,
  type AgentMessage,
  type ExecMessage,
} from "../../../src/vm/agent-protocol.ts";
import { HrError, isHrError } from "../../../src/util/errors.ts";

const samples: AgentMessage[] = [
  { type: "exec", id: 1, timeoutMs: 5000, command: "echo hi; echo err >&2; exit 3" },
  { type: "exec", id: 0xffffffff, timeoutMs: 0, command: "" },
  {
    type: "result",
    id: 2,
    exitCode: 3,
    timedOut: false,
    stdoutTruncated: false,
    stderrTruncated: false,
    stdout: Buffer.from("hi\n"),
    stderr: Buffer.from("err\n"),
  },
  {
    type: "result",
    id: 3,
    exitCode: 124,
    timedOut: true,
    stdoutTruncated: true,
    stderrTruncated: true,
    stdout: Buffer.alloc(0),
    stderr: Buffer.from([0, 1, 2, 255]),
  },
  { type: "spawn", id: 4, command: "hr-stream recv 7001 /tmp/recv.json" },
  { type: "spawned", id: 5, pid: 1234 },
  { type: "ping", id: 6 },
  { type: "pong", id: 6, hostname: "db" },
  { type: "error", id: 0, message: "bad frame length 0" },
  { type: "exec", id: 7, timeoutMs: 1, command: "printf 'ünïcødé ✓'" },
];

function decodeAll(chunks: Buffer[]): AgentMessage[] {
  const decoder = new AgentDecoder();
  const out: AgentMessage[] = [];
  for (const chunk of chunks) out.push(...decoder.push(chunk));
  assert.equal(decoder.buffered, 0, "no bytes left over");
  return out;
}

function frameWithLength(length: number, rest: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(length, 0);
  return Buffer.concat([header, rest]);
}

function expectProtocolError(fn: () => unknown): void {
  assert.throws(fn, (error: unknown) => isHrError(error, "AGENT_PROTOCOL"));
}

describe("agent protocol", () => {
  it("round-trips every message type", () => {
    for (const message of samples) {
      assert.deepEqual(decodeAll([encodeMessage(message)]), [message], message.type);
    }
  });

  it("decodes a stream split at every byte boundary", () => {
    const stream = Buffer.concat(samples.map(encodeMessage));
    for (let cut = 0; cut <= stream.length; cut++) {
      assert.deepEqual(decodeAll([stream.subarray(0, cut), stream.subarray(cut)]), samples, `cut at ${cut}`);
    }
  });

  it("decodes a stream fed one byte at a time", () => {
    const stream = Buffer.concat(samples.map(encodeMessage));
    const bytes = [...stream].map((byte) => Buffer.of(byte));
    assert.deepEqual(decodeAll(bytes), samples);
  });

  it("decodes a large RESULT across many chunks", () => {
    const stdout = Buffer.alloc(3 * 1024 * 1024, 7);
    const message: AgentMessage = {
      type: "result",
      id: 9,
      exitCode: 0,
      timedOut: false,
      stdoutTruncated: false,
      stderrTruncated: false,
      stdout,
      stderr: Buffer.alloc(0),
    };
    const stream = encodeMessage(message);
    const chunks: Buffer[] = [];
    for (let offset = 0; offset < stream.length; offset += 65536)
      chunks.push(stream.subarray(offset, offset + 65536));
    assert.deepEqual(decodeAll(chunks), [message]);
  });

  it("rejects an oversized length before buffering the body", () => {
    const decoder = new AgentDecoder();
    expectProtocolError(() => decoder.push(frameWithLength(FRAME_MAX + 1)));
    // The stream is lost: every later push fails too.
    expectProtocolError(() => decoder.push(encodeMessage({ type: "ping", id: 1 })));
  });

  it("accepts a frame of exactly FRAME_MAX", () => {
    const payload = FRAME_MAX - 1 - 4 - 4 - 1 - 4 - 4;
    const message: AgentMessage = {
      type: "result",
      id: 1,
      exitCode: 0,
      timedOut: false,
      stdoutTruncated: false,
      stderrTruncated: false,
      stdout: Buffer.alloc(payload),
      stderr: Buffer.alloc(0),
    };
    const frame = encodeMessage(message);
    assert.equal(frame.readUInt32BE(0), FRAME_MAX);
    assert.equal(decodeAll([frame]).length, 1);
    assert.throws(() => encodeMessage({ ...message, stdout: Buffer.alloc(payload + 1) }), RangeError);
  });

  it("rejects a zero length, an unknown type, short and overlong bodies", () => {
    expectProtocolError(() => new AgentDecoder().push(frameWithLength(0)));
    expectProtocolError(() => new AgentDecoder().push(frameWithLength(5, Buffer.from([99, 0, 0, 0, 1]))));
    expectProtocolError(() => new AgentDecoder().push(frameWithLength(3, Buffer.from([5, 0, 0]))));
    expectProtocolError(() => new AgentDecoder().push(frameWithLength(6, Buffer.from([5, 0, 0, 0, 1, 9]))));
    // RESULT whose stdoutLen points past the end of the frame.
    const lying = Buffer.from([2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0, 0]);
    expectProtocolError(() => new AgentDecoder().push(frameWithLength(lying.length, lying)));
  });

  it("throws nothing but HrError on garbage", () => {
    let seed = 12345;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    for (let round = 0; round < 2000; round++) {
      const decoder = new AgentDecoder();
      const size = random() % 64;
      const garbage = Buffer.alloc(size);
      for (let i = 0; i < size; i++) garbage[i] = random() & 0xff;
      // Small lengths make the garbage reach the body parser, not only the length check.
      if (size >= 4 && round % 2 === 0) garbage.writeUInt32BE(random() % (size - 3), 0);
      try {
        decoder.push(garbage);
      } catch (error) {
        assert.ok(error instanceof HrError, `round ${round}: ${String(error)}`);
        assert.equal(error.code, "AGENT_PROTOCOL");
      }
    }
  });

  it("refuses to encode out-of-range integers", () => {
    assert.throws(() => encodeMessage({ type: "ping", id: -1 }), RangeError);
    assert.throws(() => encodeMessage({ type: "spawned", id: 1, pid: 2 ** 32 }), RangeError);
  });
});

/**
 * AgentClient against a fake agent: a unix socket server that decodes requests and answers
 * through `reply`, the way QEMU's chardev relays the guest agent.
 */
describe("AgentClient", () => {
  let dir: string;
  const servers: Server[] = [];
  const clients: AgentClient[] = [];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "hr-agent-test-"));
  });
  after(async () => {
    for (const client of clients) await client.close();
    for (const server of servers) await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  let counter = 0;
  async function fakeAgent(
    reply: (message: AgentMessage, socket: Socket) => void,
    options: { delayListenMs?: number } = {},
  ): Promise<string> {
    const path = join(dir, `agent-${counter++}.sock`);
    const server = createServer((socket) => {
      const decoder = new AgentDecoder();
      socket.on("data", (chunk: Buffer) => {
        for (const message of decoder.push(chunk)) reply(message, socket);
      });
      socket.on("error", () => socket.destroy());
    });
    servers.push(server);
    const listen = (): void => {
      server.listen(path);
    };
    if (options.delayListenMs === undefined) {
      await new Promise<void>((resolve) => server.listen(path, resolve));
    } else {
      setTimeout(listen, options.delayListenMs);
    }
    return path;
  }

  async function connect(path: string): Promise<AgentClient> {
    const client = await AgentClient.connect(path, { timeoutMs: 2000 });
    clients.push(client);
    return client;
  }

  function send(socket: Socket, message: AgentMessage): void {
    socket.write(encodeMessage(message));
  }

  it("waits for the socket, ignores stale replies and correlates out-of-order ones", async () => {
    let held: ExecMessage | undefined;
    const path = await fakeAgent(
      (message, socket) => {
        if (message.type === "ping") {
          send(socket, { type: "pong", id: message.id + 1000, hostname: "stale" }); // unknown id
          send(socket, { type: "pong", id: message.id, hostname: "db" });
        } else if (message.type === "exec" && message.command === "first") {
          held = message; // answered after the second
        } else if (message.type === "exec") {
          send(socket, result(message.id, message.command));
          if (held) send(socket, result(held.id, held.command));
        } else if (message.type === "spawn") {
          send(socket, { type: "spawned", id: message.id, pid: 42 });
        }
      },
      { delayListenMs: 150 },
    );
    const client = await connect(path);
    assert.equal(await client.waitReady(2000), "db");
    const [first, second] = await Promise.all([client.exec("first"), client.exec("second")]);
    assert.equal(first.stdout.toString(), "first");
    assert.equal(second.stdout.toString(), "second");
    assert.equal(first.exitCode, 7);
    assert.equal(await client.spawn("sleep 1"), 42);
  });

  it("rejects pending calls with AGENT_CLOSED when the socket closes", async () => {
    const path = await fakeAgent((message, socket) => {
      if (message.type === "exec") socket.destroy();
    });
    const client = await connect(path);
    await assert.rejects(client.exec("anything"), (error: unknown) => isHrError(error, "AGENT_CLOSED"));
    await client.closed;
    await assert.rejects(client.ping(), (error: unknown) => isHrError(error, "AGENT_CLOSED"));
  });

  it("times out on the host side with AGENT_TIMEOUT", async () => {
    const path = await fakeAgent(() => {});
    const client = await connect(path);
    await assert.rejects(client.exec("sleep 9", { timeoutMs: 30, marginMs: 30 }), (error: unknown) =>
      isHrError(error, "AGENT_TIMEOUT"),
    );
    await assert.rejects(client.waitReady(100), (error: unknown) => isHrError(error, "AGENT_TIMEOUT"));
    assert.equal(client.isClosed, false);
  });

  it("maps ERROR replies: per request to AGENT_ERROR, id 0 to AGENT_PROTOCOL and a closed client", async () => {
    const path = await fakeAgent((message, socket) => {
      if (message.type === "spawn") send(socket, { type: "error", id: message.id, message: "no" });
      if (message.type === "exec") send(socket, { type: "error", id: 0, message: "bad frame length" });
    });
    const client = await connect(path);
    await assert.rejects(client.spawn("x"), (error: unknown) => isHrError(error, "AGENT_ERROR"));
    await assert.rejects(client.exec("x"), (error: unknown) => isHrError(error, "AGENT_PROTOCOL"));
    assert.equal(client.isClosed, true);
  });

  it("fails pending calls with AGENT_PROTOCOL on a garbled stream", async () => {
    const path = await fakeAgent((_message, socket) => {
      socket.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1]));
    });
    const client = await connect(path);
    await assert.rejects(client.ping(), (error: unknown) => isHrError(error, "AGENT_PROTOCOL"));
  });

  it("reports AGENT_CONNECT when nothing listens", async () => {
    await assert.rejects(
      AgentClient.connect(join(dir, "missing.sock"), { timeoutMs: 120 }),
      (error: unknown) => isHrError(error, "AGENT_CONNECT"),
    );
  });
});

function result(id: number, output: string): AgentMessage {
  return {
    type: "result",
    id,
    exitCode: 7,
    timedOut: false,
    stdoutTruncated: false,
    stderrTruncated: false,
    stdout: Buffer.from(output),
    stderr: Buffer.alloc(0),
  };
}
