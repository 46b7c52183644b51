/** The elastic working-set window (hotrestore's page-server policy), driven through a fake view. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { ElasticWindowPolicy, type ElasticWindowOptions } from "../../../src/restore/vm/elastic-window.ts";
import type { PolicyPause, PolicyView } from "../../../src/restore/vm/page-server-policy.ts";
import { PageSpace, type PageRef } from "../../../src/restore/vm/page-server-space.ts";

const PAGES = 1000;

/** What the page server would show the policy: pages offered or faulted count as sent. */
class FakeView implements PolicyView {
  readonly space: PageSpace;
  readonly sent = new Set<number>();
  started = false;

  constructor(space = new PageSpace([{ id: "ram0", usedLength: 4096 * PAGES }])) {
    this.space = space;
  }

  isUnsent(index: number): boolean {
    return !this.sent.has(index);
  }
}

const ref = (page: number, blockId = "ram0"): PageRef => ({ blockId, page });
const refs = (pages: readonly number[]): PageRef[] => pages.map((page) => ref(page));
/** Working set of `count` entries, entry i being page 100 + i (so positions and pages differ). */
const workingSet = (count: number): PageRef[] => refs(Array.from({ length: count }, (_, i) => 100 + i));
const pagesFrom = (first: number, count: number): number[] =>
  Array.from({ length: count }, (_, i) => first + i);

/** Asks for a batch, expects pages, and marks them sent as the server would. */
function take(policy: ElasticWindowPolicy, view: FakeView, max = 1000): number[] {
  const batch = policy.nextBatch(max, view);
  assert.ok(Array.isArray(batch), `expected pages, got a pause of ${JSON.stringify(batch)}`);
  for (const index of batch) view.sent.add(index);
  return batch;
}

function pause(policy: ElasticWindowPolicy, view: FakeView, max = 1000): number {
  const batch = policy.nextBatch(max, view);
  assert.ok(!Array.isArray(batch), `expected a pause, got pages ${JSON.stringify(batch)}`);
  return batch.pauseMs;
}

/** The guest asks for a page after start; in flight when it was already offered. */
function fault(policy: ElasticWindowPolicy, view: FakeView, index: number, atUs: number): void {
  policy.onFault({ index, inFlight: view.sent.has(index), atUs, afterStart: view.started }, view);
  view.sent.add(index);
}

function startedPolicy(
  set: readonly PageRef[],
  options: Partial<ElasticWindowOptions>,
): { policy: ElasticWindowPolicy; view: FakeView } {
  const policy = new ElasticWindowPolicy(set, options);
  const view = new FakeView();
  view.started = true;
  policy.onStart(view);
  return { policy, view };
}

const SMALL = {
  initialWindow: 4,
  minWindow: 2,
  maxWindow: 16,
  grow: 2,
  shrink: 0.5,
  idleMs: 3,
  fillWhenFull: false,
};

describe("elastic window: before start", () => {
  it("offers the whole working set in order, skipping pages already sent", () => {
    const policy = new ElasticWindowPolicy(refs([10, 5, 7, 3, 900]), { initialWindow: 2, minWindow: 1 });
    const view = new FakeView();
    view.sent.add(7);
    assert.deepEqual(take(policy, view, 3), [10, 5, 3]);
    assert.deepEqual(take(policy, view, 3), [900]);
  });

  it("does not hold the working set back to the window while the VM is paused", () => {
    const policy = new ElasticWindowPolicy(workingSet(50), { ...SMALL });
    const view = new FakeView();
    assert.deepEqual(take(policy, view), pagesFrom(100, 50));
  });

  it("ignores faults before start: no count, no resize", () => {
    const policy = new ElasticWindowPolicy(workingSet(20), { ...SMALL });
    const view = new FakeView();
    fault(policy, view, 110, 50);
    fault(policy, view, 999, 60);
    const stats = policy.stats();
    assert.equal(policy.window, 4);
    assert.equal(stats.faultsInSetUnsent + stats.faultsInSetInFlight + stats.faultsOutsideSet, 0);
    assert.equal(stats.guestPosition, 0);
  });
});

describe("elastic window: after start", () => {
  it("offers at most `window` entries beyond the guest position, then pauses for idleMs", () => {
    const { policy, view } = startedPolicy(workingSet(20), SMALL);
    assert.deepEqual(take(policy, view, 3), [100, 101, 102]);
    assert.deepEqual(take(policy, view, 3), [103]);
    assert.equal(pause(policy, view), 3);
  });

  it("fills a full window with other pages in address order, and pauses only when none are left", () => {
    // the space has pages 0..PAGES-1; the working set is pages 100..119
    const { policy, view } = startedPolicy(workingSet(20), {
      ...SMALL,
      fillWhenFull: true,
      restBatchPages: 5,
    });
    assert.deepEqual(take(policy, view), [100, 101, 102, 103]);
    assert.deepEqual(take(policy, view), [0, 1, 2, 3, 4], "address order while the window is full");
    fault(policy, view, 104, 10); // the guest reached the window's end: it grows and moves on
    assert.deepEqual(take(policy, view).slice(0, 2), [105, 106], "working-set pages first again");
    for (let i = 0; i < view.space.total; i += 1) if (i < 100 || i >= 120) view.sent.add(i);
    const next = policy.nextBatch(1000, view);
    assert.ok(!Array.isArray(next) || next.every((index) => index >= 100 && index < 120));
  });

  it("counts window entries, not pages: entries already sent use up the window", () => {
    const { policy, view } = startedPolicy(workingSet(20), SMALL);
    view.sent.add(101);
    assert.deepEqual(take(policy, view), [100, 102, 103]);
    assert.equal(pause(policy, view), 3);
  });

  it("slides the window by its size when a pause ends without a fault", () => {
    const { policy, view } = startedPolicy(workingSet(20), SMALL);
    assert.deepEqual(take(policy, view), pagesFrom(100, 4));
    pause(policy, view);
    assert.deepEqual(take(policy, view), pagesFrom(104, 4));
    assert.equal(policy.stats().guestPosition, 4);
    pause(policy, view);
    assert.deepEqual(take(policy, view), pagesFrom(108, 4));
    assert.equal(policy.window, 4, "a slide does not resize");
  });

  it("does not slide when a fault came during the pause", () => {
    const { policy, view } = startedPolicy(workingSet(20), SMALL);
    take(policy, view);
    pause(policy, view);
    fault(policy, view, 100, 10); // in flight, position 0: the guest is at entry 1
    assert.deepEqual(take(policy, view), [104]);
    assert.equal(policy.stats().guestPosition, 1);
    pause(policy, view);
  });

  it("grows the window on a fault on an unsent working-set page and moves the guest there", () => {
    const { policy, view } = startedPolicy(workingSet(40), SMALL);
    assert.deepEqual(take(policy, view), pagesFrom(100, 4));
    fault(policy, view, 110, 1500); // entry 10, never offered
    assert.equal(policy.window, 8);
    const stats = policy.stats();
    assert.equal(stats.guestPosition, 11);
    assert.equal(stats.faultsInSetUnsent, 1);
    assert.deepEqual(stats.window, [
      { atUs: 0, pages: 4, why: "start" },
      { atUs: 1500, pages: 8, why: "grow" },
    ]);
    // The window now runs from the guest's position: entries 11..18.
    assert.deepEqual(take(policy, view), pagesFrom(111, 8));
    pause(policy, view);
  });

  it("caps growth at maxWindow and logs no change once there", () => {
    const { policy, view } = startedPolicy(workingSet(40), { ...SMALL, maxWindow: 10 });
    fault(policy, view, 105, 1);
    fault(policy, view, 106, 2);
    fault(policy, view, 107, 3);
    assert.equal(policy.window, 10);
    assert.equal(policy.stats().faultsInSetUnsent, 3);
    assert.deepEqual(policy.stats().window, [
      { atUs: 0, pages: 4, why: "start" },
      { atUs: 1, pages: 8, why: "grow" },
      { atUs: 2, pages: 10, why: "grow" },
    ]);
  });

  it("only moves the guest position on a fault on a page already in flight", () => {
    const { policy, view } = startedPolicy(workingSet(20), SMALL);
    assert.deepEqual(take(policy, view), pagesFrom(100, 4));
    fault(policy, view, 102, 700);
    const stats = policy.stats();
    assert.equal(policy.window, 4);
    assert.equal(stats.faultsInSetInFlight, 1);
    assert.equal(stats.faultsInSetUnsent, 0);
    assert.equal(stats.guestPosition, 3);
    assert.equal(stats.window.length, 1);
    assert.deepEqual(take(policy, view), pagesFrom(104, 3));
  });

  it("never moves the guest position backwards", () => {
    const { policy, view } = startedPolicy(workingSet(20), SMALL);
    take(policy, view);
    fault(policy, view, 103, 1);
    fault(policy, view, 100, 2);
    assert.equal(policy.stats().guestPosition, 4);
  });

  it("shrinks the window on a fault outside the working set, not below minWindow", () => {
    const { policy, view } = startedPolicy(workingSet(40), { ...SMALL, initialWindow: 8, minWindow: 3 });
    fault(policy, view, 500, 10);
    assert.equal(policy.window, 4);
    fault(policy, view, 501, 20);
    assert.equal(policy.window, 3);
    fault(policy, view, 502, 30);
    assert.equal(policy.window, 3);
    const stats = policy.stats();
    assert.equal(stats.faultsOutsideSet, 3);
    assert.equal(stats.guestPosition, 0);
    assert.deepEqual(stats.window, [
      { atUs: 0, pages: 8, why: "start" },
      { atUs: 10, pages: 4, why: "shrink" },
      { atUs: 20, pages: 3, why: "shrink" },
    ]);
    assert.deepEqual(take(policy, view), pagesFrom(100, 3));
  });

  it("records every window change with the time of the fault that caused it", () => {
    const { policy, view } = startedPolicy(workingSet(40), SMALL);
    fault(policy, view, 120, 1_000);
    fault(policy, view, 999, 2_500);
    fault(policy, view, 998, 4_000);
    fault(policy, view, 130, 9_000);
    assert.deepEqual(
      policy.stats().window.map((sample) => [sample.atUs, sample.pages, sample.why]),
      [
        [0, 4, "start"],
        [1_000, 8, "grow"],
        [2_500, 4, "shrink"],
        [4_000, 2, "shrink"],
        [9_000, 4, "grow"],
      ],
    );
  });
});

describe("elastic window: after the working set", () => {
  it("offers the remaining pages in address order, restBatchPages at a time", () => {
    const policy = new ElasticWindowPolicy(refs([5, 2]), { ...SMALL, restBatchPages: 4 });
    const view = new FakeView();
    assert.deepEqual(take(policy, view), [5, 2]);
    assert.deepEqual(take(policy, view), [0, 1, 3, 4]);
    assert.deepEqual(take(policy, view, 3), [6, 7, 8]);
    view.started = true;
    policy.onStart(view);
    assert.deepEqual(take(policy, view), [9, 10, 11, 12], "no pauses with restPauseMs 0");
  });

  it("alternates pauses and batches after start when restPauseMs > 0", () => {
    const { policy, view } = startedPolicy(refs([5, 2]), { ...SMALL, restBatchPages: 4, restPauseMs: 7 });
    assert.deepEqual(take(policy, view), [5, 2]);
    assert.equal(pause(policy, view), 7);
    assert.deepEqual(take(policy, view), [0, 1, 3, 4]);
    assert.equal(pause(policy, view), 7);
    assert.deepEqual(take(policy, view), [6, 7, 8, 9]);
  });

  it("does not pause between address-order batches before start", () => {
    const policy = new ElasticWindowPolicy(refs([5, 2]), { ...SMALL, restBatchPages: 4, restPauseMs: 7 });
    const view = new FakeView();
    take(policy, view);
    assert.deepEqual(take(policy, view), [0, 1, 3, 4]);
    assert.deepEqual(take(policy, view), [6, 7, 8, 9]);
  });

  it("picks up working-set pages the guest's position jumped over", () => {
    const { policy, view } = startedPolicy(workingSet(10), { ...SMALL, restBatchPages: 1000 });
    take(policy, view); // entries 0..3
    fault(policy, view, 107, 1); // jumps to entry 8, skipping 4..6
    assert.deepEqual(take(policy, view), [108, 109]);
    const rest = take(policy, view);
    assert.deepEqual(rest.slice(100, 103), [104, 105, 106]);
    assert.equal(rest.length, PAGES - 7);
  });

  it("answers an empty batch once every page was sent", () => {
    const space = new PageSpace([{ id: "ram0", usedLength: 4096 * 3 }]);
    const policy = new ElasticWindowPolicy(refs([1]));
    const view = new FakeView(space);
    assert.deepEqual(take(policy, view), [1]);
    assert.deepEqual(take(policy, view), [0, 2]);
    assert.deepEqual(take(policy, view), []);
  });
});

describe("elastic window: the working set as given", () => {
  it("ignores pages that are not in the space", () => {
    const space = new PageSpace([
      { id: "ram0", usedLength: 4096 * 8 },
      { id: "vga", usedLength: 4096 * 4 },
    ]);
    const set = [ref(3), ref(0, "rom"), ref(8), ref(-1), ref(2, "vga"), ref(4, "vga"), ref(7)];
    const policy = new ElasticWindowPolicy(set);
    const view = new FakeView(space);
    assert.deepEqual(take(policy, view, 5), [3, 10, 7]);
    assert.equal(policy.stats().workingSetPages, 3);
    view.started = true;
    fault(policy, view, 9, 1); // vga page 1: not in the working set
    assert.equal(policy.stats().faultsOutsideSet, 1);
  });

  it("keeps a page listed twice once, at its first position", () => {
    const { policy, view } = startedPolicy(refs([3, 4, 3, 5, 4, 6]), { ...SMALL, initialWindow: 2 });
    assert.equal(policy.stats().workingSetPages, 4);
    assert.deepEqual(take(policy, view), [3, 4]);
    pause(policy, view);
    assert.deepEqual(take(policy, view), [5, 6]);
  });
});

type Op =
  | { kind: "batch"; max: number }
  | { kind: "start" }
  | { kind: "fault"; page: number; inSet: boolean; gapUs: number };

const opArbitrary: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant("batch" as const), max: fc.integer({ min: 1, max: 40 }) }),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "start" as const }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("fault" as const),
      page: fc.nat(10_000),
      inSet: fc.boolean(),
      gapUs: fc.nat(500),
    }),
  },
);

const optionsArbitrary: fc.Arbitrary<ElasticWindowOptions> = fc
  .record({
    initialWindow: fc.integer({ min: 0, max: 80 }),
    minWindow: fc.integer({ min: 1, max: 16 }),
    extra: fc.nat(64),
    grow: fc.double({ min: 1, max: 4, noNaN: true }),
    shrink: fc.double({ min: 0.05, max: 1, noNaN: true }),
    idleMs: fc.integer({ min: 1, max: 5 }),
    fillWhenFull: fc.boolean(),
    restBatchPages: fc.integer({ min: 1, max: 64 }),
    restPauseMs: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 5 })),
  })
  .map(({ extra, ...rest }) => ({ ...rest, maxWindow: rest.minWindow + extra }));

const refArbitrary: fc.Arbitrary<PageRef> = fc.record({
  blockId: fc.constantFrom("ram0", "vga", "nope"),
  page: fc.integer({ min: -2, max: 160 }),
});

describe("elastic window properties", () => {
  it("offers only unsent pages of the space, each once; the window stays within bounds", () => {
    const space = new PageSpace([
      { id: "ram0", usedLength: 4096 * 150 },
      { id: "vga", usedLength: 4096 * 50 },
    ]);
    fc.assert(
      fc.property(
        fc.array(refArbitrary, { maxLength: 120 }),
        optionsArbitrary,
        fc.array(opArbitrary, { maxLength: 250 }),
        (set, options, ops) => {
          const policy = new ElasticWindowPolicy(set, options);
          const view = new FakeView(space);
          const offered = new Set<number>();
          const known = set.flatMap((entry) => {
            const index = space.tryIndex(entry.blockId, entry.page);
            return index === undefined ? [] : [index];
          });
          let atUs = 0;
          const checkWindow = (): void => {
            assert.ok(policy.window >= options.minWindow && policy.window <= options.maxWindow);
          };
          const batch = (max: number): number[] | PolicyPause => {
            const result = policy.nextBatch(max, view);
            if (!Array.isArray(result)) {
              assert.ok(result.pauseMs > 0);
              return result;
            }
            assert.ok(result.length <= max);
            for (const index of result) {
              assert.ok(Number.isInteger(index) && index >= 0 && index < space.total, `index ${index}`);
              assert.ok(view.isUnsent(index), `page ${index} offered but already sent`);
              assert.ok(!offered.has(index), `page ${index} offered twice`);
              offered.add(index);
              view.sent.add(index);
            }
            return result;
          };

          checkWindow();
          for (const op of ops) {
            if (op.kind === "batch") {
              batch(op.max);
            } else if (op.kind === "start") {
              if (!view.started) {
                view.started = true;
                policy.onStart(view);
              }
            } else {
              atUs += op.gapUs;
              const index =
                op.inSet && known.length > 0 ? (known[op.page % known.length] ?? 0) : op.page % space.total;
              fault(policy, view, index, atUs);
            }
            checkWindow();
          }

          // Left alone, the policy goes on until every page is sent.
          let done = false;
          for (let round = 0; round < 10_000 && !done; round += 1) {
            const result = batch(64);
            done = Array.isArray(result) && result.length === 0;
            checkWindow();
          }
          assert.ok(done, "the policy never ran dry");
          assert.equal(view.sent.size, space.total);

          const samples = policy.stats().window;
          samples.forEach((sample, i) => {
            assert.ok(sample.pages >= options.minWindow && sample.pages <= options.maxWindow);
            assert.ok(i === 0 || sample.atUs >= (samples[i - 1]?.atUs ?? 0));
          });
        },
      ),
      { numRuns: 300 },
    );
  });
});
