/** The page server's pure parts: page numbering, page states, policies, batches, the fault log. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { newCursor, nextBackgroundBatch } from "../../../src/restore/vm/page-server-batch.ts";
import { FaultLog, percentiles, summarizeFaults } from "../../../src/restore/vm/page-server-log.ts";
import {
  AddressOrderPolicy,
  SequenceThenAddressPolicy,
  type PolicyView,
} from "../../../src/restore/vm/page-server-policy.ts";
import { PageSpace, PageStates } from "../../../src/restore/vm/page-server-space.ts";
import { FIRST_PING, PingWindow } from "../../../src/restore/vm/page-server-window.ts";
import { isHrError } from "../../../src/util/errors.ts";

const SPACE = new PageSpace([
  { id: "ram0", usedLength: 10 * 4096 },
  { id: "rom", usedLength: 3 * 4096 },
]);

function view(states: PageStates, started = false): PolicyView {
  return { space: SPACE, isUnsent: (index) => states.isUnsent(index), started };
}

const NS = 1000n;

void describe("page space and states", () => {
  void it("numbers every page of every block once, in block order", () => {
    assert.equal(SPACE.total, 13);
    assert.equal(SPACE.indexOf({ blockId: "rom", page: 2 }), 12);
    assert.deepEqual(SPACE.refOf(10), { blockId: "rom", page: 0 });
    assert.equal(SPACE.tryIndex("rom", 3), undefined);
    assert.equal(SPACE.tryIndex("nope", 0), undefined);
    assert.throws(
      () => SPACE.indexOf({ blockId: "ram0", page: 10 }),
      (e) => isHrError(e, "PAGE_SERVER_BAD_INPUT"),
    );
    assert.throws(
      () => new PageSpace([{ id: "x", usedLength: 100 }]),
      (e) => isHrError(e, "PAGE_SERVER_BAD_INPUT"),
    );
  });

  void it("moves a page forward only: unsent, claimed, written; never written twice", () => {
    const states = new PageStates(5);
    assert.ok(states.claim(2));
    assert.ok(!states.claim(2));
    assert.equal(states.unsent, 4);
    states.markWritten(2);
    assert.equal(states.written, 1);
    assert.throws(
      () => states.markWritten(2),
      (e) => isHrError(e, "PAGE_SERVER_INTERNAL"),
    );
    assert.throws(
      () => states.markWritten(3),
      (e) => isHrError(e, "PAGE_SERVER_INTERNAL"),
    );
    assert.deepEqual(states.nextUnsent(10), [0, 1, 3, 4]);
    states.claim(0);
    assert.deepEqual(states.nextUnsent(2), [1, 3]);
  });

  void it("a LEFT zero page is skipped by the sweep, claimed only by a request, and counts as settled", () => {
    const states = new PageStates(4);
    assert.ok(states.leave(1));
    assert.ok(!states.leave(1), "left once");
    assert.ok(!states.isUnsent(1) && states.isPending(1));
    assert.equal(states.left, 1);
    assert.equal(states.unsent, 3);
    assert.deepEqual(states.nextUnsent(10), [0, 2, 3], "the background never sees it");
    assert.ok(!states.claim(1), "the background cannot claim it");
    for (const index of [0, 2, 3]) {
      assert.ok(states.claim(index));
      states.markWritten(index);
    }
    assert.ok(states.settled, "written + left = all");
    assert.ok(states.claimRequested(1), "a request takes it");
    assert.ok(!states.settled && !states.isPending(1));
    assert.equal(states.unsent + states.written, 3, "no longer left");
    assert.ok(!states.claimRequested(1), "once");
    states.markWritten(1);
    assert.ok(states.settled && states.written === 4);
    assert.ok(!states.leave(1), "a written page is never left");
  });
});

void describe("policies", () => {
  void it("address order skips pages already taken and ends with an empty batch", () => {
    const states = new PageStates(SPACE.total);
    states.claim(1);
    const policy = new AddressOrderPolicy();
    assert.deepEqual(policy.nextBatch(3, view(states)), [0, 2, 3]);
    assert.deepEqual(policy.nextBatch(100, view(states)), [4, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert.deepEqual(policy.nextBatch(100, view(states)), []);
  });

  void it("a sequence first, then address order", () => {
    const states = new PageStates(SPACE.total);
    const policy = new SequenceThenAddressPolicy([12, 5, 12, 0]);
    assert.deepEqual(policy.nextBatch(2, view(states)), [12, 5]);
    states.claim(12);
    states.claim(5);
    assert.deepEqual(policy.nextBatch(5, view(states)), [0]);
    states.claim(0);
    assert.deepEqual(policy.nextBatch(3, view(states)), [1, 2, 3]);
  });
});

function pagesOf(batch: number[] | { pauseMs: number }): number[] {
  assert.ok(Array.isArray(batch), "a batch, not a pause");
  return batch;
}

void describe("background batches", () => {
  const limits = { sectionDataPages: 2, sectionMaxPages: 5 };
  const presentEven = { isPresent: (_block: string, page: number) => page % 2 === 0 };

  void it("stops at the data-page budget; zero pages ride along", () => {
    const states = new PageStates(SPACE.total);
    const cursor = newCursor();
    const policy = new AddressOrderPolicy();
    assert.deepEqual(
      nextBackgroundBatch(cursor, policy, view(states), states, presentEven, limits),
      [0, 1, 2],
    );
    assert.deepEqual(
      nextBackgroundBatch(cursor, policy, view(states), states, presentEven, limits),
      [3, 4, 5, 6],
    );
  });

  void it("skips pages claimed since the policy offered them, and sweeps what a policy never offers", () => {
    const states = new PageStates(SPACE.total);
    const cursor = newCursor();
    const policy = new SequenceThenAddressPolicy([7, 8, 9]);
    const none = { isPresent: () => false };
    const max = { sectionDataPages: 100, sectionMaxPages: 2 };
    assert.deepEqual(nextBackgroundBatch(cursor, policy, view(states), states, none, max), [7, 8]);
    states.claim(9); // a request took it
    const rest: number[] = [];
    for (;;) {
      const batch = pagesOf(nextBackgroundBatch(cursor, policy, view(states), states, none, max));
      if (batch.length === 0) break;
      rest.push(...batch);
    }
    assert.deepEqual(rest, [0, 1, 2, 3, 4, 5, 6, 10, 11, 12]);
  });

  void it("passes a policy's pause on, unless pages were already picked", () => {
    const states = new PageStates(SPACE.total);
    let calls = 0;
    const pausing = {
      name: "pausing",
      nextBatch: () => (++calls === 1 ? [4] : { pauseMs: 25 }),
      onFault: () => undefined,
      onStart: () => undefined,
    };
    const cursor = newCursor();
    const max = { sectionDataPages: 100, sectionMaxPages: 10 };
    const none = { isPresent: () => false };
    assert.deepEqual(nextBackgroundBatch(cursor, pausing, view(states), states, none, max), [4]);
    assert.deepEqual(nextBackgroundBatch(cursor, pausing, view(states), states, none, max), { pauseMs: 25 });
  });

  void it("a policy that keeps offering stale pages cannot stop the sweep", () => {
    const states = new PageStates(SPACE.total);
    const stale = { name: "stale", nextBatch: () => [0], onFault: () => undefined, onStart: () => undefined };
    const cursor = newCursor();
    const all: number[] = [];
    for (let i = 0; i < 100; i += 1) {
      const batch = pagesOf(nextBackgroundBatch(cursor, stale, view(states), states, presentEven, limits));
      if (batch.length === 0) break;
      all.push(...batch);
    }
    assert.deepEqual(
      all.sort((a, b) => a - b),
      Array.from({ length: 13 }, (_, i) => i),
    );
  });
});

void describe("fault log", () => {
  void it("records each request with its state, latency and first-fault order", () => {
    const log = new FaultLog(SPACE, 0n);
    log.request(3, "unsent", 10n * NS, false);
    log.request(3, "claimed", 12n * NS, false);
    log.request(11, "written", 20n * NS, true);
    log.request(0, "unsent", 30n * NS, true);
    log.written(3, 15n * NS, "read");
    log.written(0, 30n * NS + 50n, "now");
    const records = log.records();
    assert.deepEqual(
      records.map((r) => [r.blockId, r.page, r.atUs, r.inFlight, r.alreadySent, r.serviceUs, r.servedBy]),
      [
        ["ram0", 3, 10, false, false, 5, "read"],
        ["ram0", 3, 12, true, false, 3, "background"],
        ["rom", 1, 20, true, true, undefined, undefined],
        ["ram0", 0, 30, false, false, 0.05, "now"],
      ],
    );
    assert.deepEqual(log.faultOrder(), [
      { blockId: "ram0", page: 3 },
      { blockId: "rom", page: 1 },
      { blockId: "ram0", page: 0 },
    ]);
    const summary = log.summary();
    assert.equal(summary.faults, 4);
    assert.equal(summary.distinctPages, 3);
    assert.equal(summary.inFlight, 2);
    assert.equal(summary.alreadySent, 1);
    assert.equal(summary.served, 3);
    assert.equal(summary.faultsAfterStart, 2);
    assert.deepEqual(summary.faultServiceUs, { p50: 3, p99: 5, max: 5 });
  });

  void it("percentiles interpolate; no data gives NaN", () => {
    const values = Array.from({ length: 101 }, (_, i) => i * 10);
    assert.deepEqual(percentiles(values), { p50: 500, p99: 990, max: 1000 });
    assert.ok(Number.isNaN(percentiles([]).p50));
    assert.ok(Number.isNaN(summarizeFaults([]).faultServiceUs.p99));
    const many = Array.from({ length: 300_000 }, (_, i) => i);
    assert.equal(percentiles(many).max, 299_999, "no spread of a huge array onto the stack");
  });
});

void describe("ping window", () => {
  void it("pings every N bytes, closes at the limit, reopens on the PONG", () => {
    const window = new PingWindow(100, 40);
    window.written(30);
    assert.equal(window.pingDue(false), undefined, "not yet 40 bytes");
    window.written(20);
    const first = window.pingDue(false);
    assert.ok(first !== undefined && first.readUInt32BE(5) === FIRST_PING, "PING 1000");
    assert.equal(window.outstanding, 50 + first.length);
    window.written(50);
    assert.ok(!window.open, "limit reached");
    const forced = window.pingDue(true);
    assert.equal(forced?.readUInt32BE(5), FIRST_PING + 1);
    assert.equal(window.pingDue(true), undefined, "nothing new since the last PING");
    assert.equal(window.acked(3), false, "the package's PONG is not ours");
    assert.ok(window.acked(FIRST_PING));
    assert.equal(window.outstanding, 50 + (forced?.length ?? 0));
    assert.ok(window.open);
    assert.ok(window.acked(FIRST_PING + 1));
    assert.equal(window.outstanding, 0);
  });
});
