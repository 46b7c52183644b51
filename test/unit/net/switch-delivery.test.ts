import assert from "node:assert/strict";
import { once } from "node:events";
import { after, describe, it } from "node:test";
import { BROADCAST_MAC } from "../../../src/net/mac.ts";
import { isHrError } from "../../../src/util/errors.ts";
import { frame, mac, SwitchHarness, tagOf, until } from "./fake-qemu.ts";

const harnesses: SwitchHarness[] = [];

async function harness(ports: string[], options: Parameters<typeof SwitchHarness.start>[1] = {}) {
  const h = await SwitchHarness.start(ports, options);
  harnesses.push(h);
  return h;
}

after(async () => {
  await Promise.all(harnesses.map((h) => h.close()));
});

/** Switch with ports a and b connected, and b's MAC (mac(2)) learned. */
async function pair(options: Parameters<typeof SwitchHarness.start>[1] = {}) {
  const h = await harness(["a", "b"], options);
  const [a, b] = [await h.connect("a"), await h.connect("b")];
  b.send(frame(mac(2), BROADCAST_MAC, "learn-b"));
  await a.waitFrames(1);
  return { h, a, b };
}

describe("VirtualSwitch hold and release", () => {
  it("queues frames for a held port in order and delivers them in order on release", async () => {
    const { h, a, b } = await pair();
    h.sw.hold("b");
    a.send(frame(mac(1), mac(2), "1"), frame(mac(1), BROADCAST_MAC, "2"), frame(mac(1), mac(2), "3"));
    await until(() => h.sw.port("b").heldFrames === 3);
    assert.deepEqual(h.sw.heldFrames("b").map(tagOf), ["1", "2", "3"]);
    assert.equal(h.sw.port("b").heldBytes, 3 * 15);
    assert.equal(h.sw.port("b").held, true);
    assert.equal(b.frames.length, 0);
    assert.deepEqual(h.sw.release("b"), { sent: 3, queued: 0, dropped: 0 });
    a.send(frame(mac(1), mac(2), "4"));
    assert.deepEqual((await b.waitFrames(4)).map(tagOf), ["1", "2", "3", "4"]);
    assert.equal(h.sw.port("b").heldFrames, 0);
  });

  it("drops the oldest held frames beyond the bound and counts them", async () => {
    const { h, a, b } = await pair({ maxHoldBytes: 3 * 15 });
    h.sw.hold("b");
    for (const tag of ["1", "2", "3", "4", "5"]) a.send(frame(mac(1), mac(2), tag));
    await until(() => h.sw.port("a").counters.rxFrames === 5);
    assert.deepEqual(h.sw.heldFrames("b").map(tagOf), ["3", "4", "5"]);
    const counters = h.sw.port("b").counters;
    assert.deepEqual([counters.holdDropped, counters.holdDroppedBytes], [2, 30]);
    h.sw.release("b");
    assert.deepEqual((await b.waitFrames(3)).map(tagOf), ["3", "4", "5"]);
  });

  it("holdAll/releaseAll, and discardHeld forgets queued frames", async () => {
    const { h, a, b } = await pair();
    h.sw.holdAll();
    a.send(frame(mac(1), mac(2), "dropped-later"));
    b.send(frame(mac(2), mac(1), "to-a"));
    await until(() => h.sw.port("a").heldFrames === 1 && h.sw.port("b").heldFrames === 1);
    assert.equal(h.sw.discardHeld("b"), 1);
    assert.deepEqual(h.sw.releaseAll(), { sent: 1, queued: 0, dropped: 0 });
    assert.deepEqual((await a.waitFrames(2)).map(tagOf), ["learn-b", "to-a"]);
    b.send(frame(mac(2), BROADCAST_MAC, "sentinel"));
    a.send(frame(mac(1), mac(2), "after"));
    await b.waitFrames(1);
    assert.deepEqual(b.frames.map(tagOf), ["after"]);
  });

  it("inject delivers frames to a port, or queues them while it is held", async () => {
    const { h, b } = await pair();
    const injected = [frame(mac(9), mac(2), "i1"), frame(mac(9), mac(2), "i2")];
    assert.deepEqual(h.sw.inject("b", injected), { sent: 2, queued: 0, dropped: 0 });
    await b.waitFrames(2);
    h.sw.hold("b");
    assert.deepEqual(h.sw.inject("b", [frame(mac(9), mac(2), "i3")]), { sent: 0, queued: 1, dropped: 0 });
    h.sw.release("b");
    assert.deepEqual((await b.waitFrames(3)).map(tagOf), ["i1", "i2", "i3"]);
    assert.equal(h.sw.port("b").counters.injected, 3);
    assert.deepEqual(h.sw.traffic(), [{ from: "b", to: "*", frames: 1, bytes: 21 }]);
  });
});

describe("VirtualSwitch connections", () => {
  it("a new connection to a port replaces the old one", async () => {
    const { h, a } = await pair();
    const events: unknown[] = [];
    h.sw.on("port-connected", (event) => events.push(event));
    const b2 = await h.connect("b");
    assert.deepEqual(events, [{ port: "b", replaced: true }]);
    a.send(frame(mac(1), mac(2), "to-new-b"));
    assert.deepEqual((await b2.waitFrames(1)).map(tagOf), ["to-new-b"]);
    b2.send(frame(mac(2), mac(1), "from-new-b"));
    await a.waitFrames(2);
    const counters = h.sw.port("b").counters;
    assert.deepEqual([counters.connections, counters.replacedConnections], [2, 1]);
  });

  it("drops frames to a port without QEMU, or keeps them with holdWhileDisconnected", async () => {
    const { h, a, b } = await pair();
    const gone = once(h.sw, "port-disconnected");
    b.close();
    await gone;
    assert.equal(h.sw.port("b").connected, false);
    a.send(frame(mac(1), mac(2), "lost"));
    await until(() => h.sw.port("b").counters.dropsDisconnected === 1);
    h.sw.setHoldWhileDisconnected("b", true);
    a.send(frame(mac(1), mac(2), "kept-1"), frame(mac(1), mac(2), "kept-2"));
    await until(() => h.sw.port("b").heldFrames === 2);
    assert.equal(h.sw.port("b").held, false);
    const b2 = await h.connect("b");
    assert.deepEqual((await b2.waitFrames(2)).map(tagOf), ["kept-1", "kept-2"]);
    assert.equal(h.sw.port("b").heldFrames, 0);
  });

  it("a release while disconnected drops the queued frames and counts them", async () => {
    const { h, a, b } = await pair();
    h.sw.hold("b");
    a.send(frame(mac(1), mac(2), "x"));
    await until(() => h.sw.port("b").heldFrames === 1);
    b.close();
    await once(h.sw, "port-disconnected");
    assert.deepEqual(h.sw.release("b"), { sent: 0, queued: 0, dropped: 1 });
    assert.equal(h.sw.port("b").counters.dropsDisconnected, 1);
  });

  it("an oversized frame length disconnects only that port", async () => {
    const h = await harness(["a", "b", "c"]);
    const [a, b, c] = [await h.connect("a"), await h.connect("b"), await h.connect("c")];
    const errors: { port: string; error: unknown }[] = [];
    h.sw.on("port-protocol-error", (event) => errors.push(event));
    a.send(frame(mac(1), BROADCAST_MAC, "before"));
    a.socket.write(Buffer.from([0x7f, 0xff, 0xff, 0xff, 1, 2, 3]));
    await a.closed;
    assert.equal(errors[0]?.port, "a");
    assert.ok(isHrError(errors[0]?.error, "FRAME_TOO_LARGE"));
    assert.equal(h.sw.port("a").counters.protocolErrors, 1);
    b.send(frame(mac(2), BROADCAST_MAC, "still-works"));
    assert.deepEqual((await c.waitFrames(2)).map(tagOf), ["before", "still-works"]);
    const a2 = await h.connect("a");
    c.send(frame(mac(3), BROADCAST_MAC, "to-new-a"));
    assert.deepEqual((await a2.waitFrames(1)).map(tagOf), ["to-new-a"]);
  });

  it("a port that does not read loses frames beyond its buffer bound; others are not blocked", async () => {
    const h = await harness(["a", "b", "c"], { maxSocketBufferBytes: 64 * 1024 });
    const [a, b, c] = [await h.connect("a"), await h.connect("b"), await h.connect("c")];
    b.socket.pause();
    b.send(frame(mac(2), BROADCAST_MAC, "learn-b"));
    await c.waitFrames(1);
    const big = frame(mac(1), mac(2), "x".repeat(1400));
    const count = 3000;
    for (let i = 0; i < count; i++) a.send(big);
    await until(() => h.sw.port("a").counters.rxFrames === count, 10_000);
    const counters = h.sw.port("b").counters;
    assert.ok(counters.dropsBackpressure > 0, "some frames dropped");
    assert.equal(counters.txFrames + counters.dropsBackpressure, count);
    a.send(frame(mac(1), BROADCAST_MAC, "sentinel"));
    assert.deepEqual((await c.waitFrames(2)).map(tagOf), ["learn-b", "sentinel"]);
  });
});
