import assert from "node:assert/strict";
import { describe, it, mock } from "node:test";
import {
  MAX_REANNOUNCE_SPREAD_MS,
  REANNOUNCE_SPREAD_PER_SESSION_MS,
  ReannouncePacing,
  Reannouncer,
  spreadForSessions,
} from "./reannounce-pacing.js";

describe("ReannouncePacing", () => {
  it("waits within the spread only after a lost session, and prefers the tracker's spread", () => {
    const pacing = new ReannouncePacing({ spreadMs: 1_000, batchBlobs: 64, batchIntervalMs: 100, random: () => 0.5 });
    assert.equal(pacing.firstDelayMs(false), 0, "a first start is not a storm");
    assert.equal(pacing.firstDelayMs(true), 500);
    assert.equal(pacing.firstDelayMs(true, 4_000), 2_000, "the tracker's spread wins");
    assert.equal(pacing.firstDelayMs(true, 10 * MAX_REANNOUNCE_SPREAD_MS), MAX_REANNOUNCE_SPREAD_MS / 2, "capped");
  });

  it("plans batches of at most batchBlobs, one per interval", () => {
    const pacing = new ReannouncePacing({ spreadMs: 1_000, batchBlobs: 64, batchIntervalMs: 100, random: () => 0.25 });
    assert.deepEqual(pacing.plan(150, true), [
      { atMs: 250, blobs: 64 },
      { atMs: 350, blobs: 64 },
      { atMs: 450, blobs: 22 },
    ]);
    assert.deepEqual(pacing.plan(0, true), []);
  });

  it("the tracker's spread grows with its sessions, up to the cap", () => {
    assert.equal(spreadForSessions(0), REANNOUNCE_SPREAD_PER_SESSION_MS);
    assert.equal(spreadForSessions(100), 100 * REANNOUNCE_SPREAD_PER_SESSION_MS);
    assert.equal(spreadForSessions(1_000_000), MAX_REANNOUNCE_SPREAD_MS);
  });

  it("shuffles deterministically with the given random and keeps every item", () => {
    let x = 1;
    const pacing = new ReannouncePacing({ random: () => (x = (x * 16_807) % 2_147_483_647) / 2_147_483_647 });
    const out = pacing.shuffle([1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(
      [...out].sort((a, b) => a - b),
      [1, 2, 3, 4, 5, 6, 7, 8],
    );
    assert.notDeepEqual(out, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.throws(() => new ReannouncePacing({ batchBlobs: 0 }), RangeError);
    assert.throws(() => new ReannouncePacing({ spreadMs: -1 }), RangeError);
  });
});

describe("Reannouncer", () => {
  it("sends batches on schedule, skips a tick while the stream is backed up, and forgets what changed meanwhile", (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const sent: number[][] = [];
    let ready = true;
    const reannouncer = new Reannouncer<number>({
      pacing: new ReannouncePacing({ spreadMs: 1_000, batchBlobs: 2, batchIntervalMs: 100, random: () => 0.5 }),
      ready: () => ready,
      send: (batch) => sent.push(batch),
    });
    const items = [1, 2, 3, 4, 5, 6];
    reannouncer.start(items, true);
    assert.equal(reannouncer.pending, 6);
    t.mock.timers.tick(499);
    assert.equal(sent.length, 0, "nothing before the random delay");
    t.mock.timers.tick(1);
    assert.equal(sent.length, 1);
    const firstBatch = sent[0] ?? [];
    assert.equal(firstBatch.length, 2);
    reannouncer.forget(firstBatch[0] ?? -1); // already sent: no effect
    const remaining = items.filter((i) => !firstBatch.includes(i));
    reannouncer.forget(remaining[0] ?? -1); // announced anew meanwhile: not re-sent
    ready = false;
    t.mock.timers.tick(100);
    assert.equal(sent.length, 1, "backed up: the batch waits");
    ready = true;
    t.mock.timers.tick(100);
    t.mock.timers.tick(100);
    assert.deepEqual(
      sent.map((b) => b.length),
      [2, 2, 1],
    );
    assert.equal(reannouncer.pending, 0);
    const all = sent.flat().sort((a, b) => a - b);
    assert.deepEqual(
      all,
      items.filter((i) => i !== remaining[0]),
    );
    t.mock.timers.tick(10_000);
    assert.equal(sent.length, 3, "no more timers once done");
  });

  it("a first session sends at once; stop cancels the rest", () => {
    mock.timers.enable({ apis: ["setTimeout"] });
    try {
      const sent: number[][] = [];
      const reannouncer = new Reannouncer<number>({
        pacing: new ReannouncePacing({ batchBlobs: 1, batchIntervalMs: 50 }),
        ready: () => true,
        send: (b) => sent.push(b),
      });
      reannouncer.start([7, 8, 9], false);
      mock.timers.tick(0);
      assert.equal(sent.length, 1);
      reannouncer.stop();
      mock.timers.tick(1_000);
      assert.equal(sent.length, 1);
      assert.equal(reannouncer.pending, 0);
    } finally {
      mock.timers.reset();
    }
  });
});
