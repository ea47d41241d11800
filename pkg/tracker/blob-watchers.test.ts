import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BlobWatchers, type BlobWatchersOptions, MAX_CHANGED_HOLDERS_PER_ROUND, type RoundChanges } from "./blob-watchers.js";
import { manualClock, testDigest } from "./testing/helpers.js";

const D = testDigest("watched");
const E = testDigest("other");

/** BlobWatchers on a clock and a timer queue the test moves by hand; every delivery is recorded. */
function harness(options: Partial<BlobWatchersOptions> = {}) {
  const clock = manualClock(0);
  const delivered: string[] = [];
  const changes: RoundChanges[] = [];
  const outcomes: boolean[] = [];
  let refuse = new Set<string>();
  const watchers = new BlobWatchers({
    now: clock.now,
    schedule: clock.schedule,
    deliver: (agentId, digest, _view, change) => {
      if (refuse.has(agentId)) return false;
      changes.push(change);
      delivered.push(`${agentId}:${digest === D ? "D" : "E"}`);
      return true;
    },
    onNotice: (ok) => outcomes.push(ok),
    intervalMs: 100,
    ttlMs: 5_000,
    maxPerAgent: 3,
    ...options,
  });
  return {
    watchers,
    delivered,
    changes,
    outcomes,
    refuse(ids: string[]) {
      refuse = new Set(ids);
    },
    /** Moves the clock, running the timers that fall due on the way. */
    advance: clock.advance,
    pendingTimers: clock.pending,
  };
}

describe("BlobWatchers", () => {
  it("tells every watcher of a blob when another agent changes it, never the one that changed it", () => {
    const h = harness();
    h.watchers.watch("a", D);
    h.watchers.watch("b", D);
    h.watchers.watch("c", E);
    h.watchers.changed(D, "b");
    assert.deepEqual(h.delivered, ["a:D"]);
    h.advance(200);
    h.watchers.changed(D);
    assert.deepEqual(h.delivered, ["a:D", "a:D", "b:D"], "a released grant concerns everyone");
  });

  it("a blob nobody watches costs nothing", () => {
    const h = harness();
    h.watchers.changed(D, "x");
    assert.deepEqual(h.delivered, []);
    assert.equal(h.pendingTimers(), 0);
  });

  it("coalesces a burst into the first notice now and one at the end of the interval", () => {
    const h = harness();
    h.watchers.watch("a", D);
    h.watchers.changed(D, "x");
    for (let i = 0; i < 10; i++) {
      h.advance(5);
      h.watchers.changed(D, "y");
    }
    assert.deepEqual(h.delivered, ["a:D"], "the burst waits for the interval");
    assert.equal(h.pendingTimers(), 1, "one timer per blob, however many changes");
    h.advance(100);
    assert.deepEqual(h.delivered, ["a:D", "a:D"]);
    h.advance(1_000);
    assert.deepEqual(h.delivered, ["a:D", "a:D"], "nothing changed since: nothing more");
  });

  it("a coalesced round caused only by one watcher skips that watcher; by several, nobody", () => {
    const h = harness();
    h.watchers.watch("a", D);
    h.watchers.watch("b", D);
    h.watchers.changed(D, "x");
    h.advance(10);
    h.watchers.changed(D, "a");
    h.advance(100);
    assert.deepEqual(h.delivered, ["a:D", "b:D", "b:D"]);
    h.watchers.changed(D, "a");
    h.advance(10);
    h.watchers.changed(D, "b");
    h.advance(100);
    assert.deepEqual(h.delivered.slice(3), ["a:D", "b:D"]);
  });

  it("a watch expires without a renewing lookup; a lookup renews it", () => {
    const h = harness();
    h.watchers.watch("a", D);
    h.watchers.watch("b", D);
    h.advance(4_000);
    h.watchers.watch("a", D);
    h.advance(1_500);
    h.watchers.changed(D, "x");
    assert.deepEqual(h.delivered, ["a:D"], "b's watch ended 5 s after its lookup");
    assert.equal(h.watchers.size, 1);
    assert.equal(h.watchers.isWatching("b", D), false);
  });

  it("keeps at most maxPerAgent watches per agent, the oldest out", () => {
    const h = harness();
    const digests = ["1", "2", "3", "4"].map((s) => testDigest(`cap-${s}`));
    for (const d of digests) h.watchers.watch("a", d);
    assert.equal(h.watchers.size, 3);
    assert.equal(h.watchers.isWatching("a", digests[0]!), false);
    assert.equal(h.watchers.isWatching("a", digests[3]!), true);
    // A lookup moves a watch to the back of the line.
    h.watchers.watch("a", digests[1]!);
    h.watchers.watch("a", D);
    assert.equal(h.watchers.isWatching("a", digests[1]!), true);
    assert.equal(h.watchers.isWatching("a", digests[2]!), false);
  });

  it("unwatch and forget end watches, and the blob's pending round with the last of them", () => {
    const h = harness();
    h.watchers.watch("a", D);
    h.watchers.watch("a", E);
    h.watchers.watch("b", D);
    h.watchers.unwatch("b", D);
    h.watchers.changed(D, "x");
    h.watchers.changed(D, "x");
    assert.equal(h.pendingTimers(), 1);
    h.watchers.forget("a");
    assert.equal(h.watchers.size, 0);
    assert.equal(h.pendingTimers(), 0, "the round for a blob nobody watches is cancelled");
    h.advance(1_000);
    assert.deepEqual(h.delivered, ["a:D"]);
  });

  it("counts a notice the session could not take as dropped", () => {
    const h = harness();
    h.watchers.watch("a", D);
    h.watchers.watch("b", D);
    h.refuse(["b"]);
    h.watchers.changed(D, "x");
    assert.deepEqual(h.delivered, ["a:D"]);
    assert.deepEqual(h.outcomes.sort(), [false, true]);
  });

  it("tells each round which agents changed the blob since the last, and whether its grant was released", () => {
    const h = harness();
    h.watchers.watch("w", D);
    h.watchers.changed(D, "a");
    h.watchers.changed(D, "b");
    h.watchers.changed(D, "a");
    h.advance(100);
    h.watchers.changed(D);
    h.advance(100);
    assert.deepEqual(
      h.changes.map((c) => ({ holders: c.holders === undefined ? undefined : [...c.holders].sort(), grantReleased: c.grantReleased })),
      [
        { holders: ["a"], grantReleased: false },
        { holders: ["a", "b"], grantReleased: false },
        { holders: [], grantReleased: true },
      ],
    );
  });

  it("a round with more changed agents than it lists says only that the blob changed", () => {
    const h = harness();
    h.watchers.watch("w", D);
    h.watchers.changed(D, "first");
    for (let i = 0; i <= MAX_CHANGED_HOLDERS_PER_ROUND; i++) h.watchers.changed(D, `agent-${i}`);
    h.advance(100);
    assert.equal(h.changes.length, 2);
    assert.equal(h.changes[1]?.holders, undefined);
  });
});
