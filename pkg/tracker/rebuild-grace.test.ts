import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { MemoryTracker } from "./memory-tracker.js";
import {
  DEFAULT_REBUILD_HOLD_MS,
  DEFAULT_REBUILD_MAX_MS,
  DEFAULT_REBUILD_SETTLE_MS,
  REBUILD_RETRY_AFTER_MS,
  RebuildGrace,
} from "./rebuild-grace.js";
import { testDigest, testIdentity } from "./testing/helpers.js";

const held = testDigest("held");
const fresh = testDigest("fresh");

function setup(): { tracker: MemoryTracker; clock: { now: number } } {
  const clock = { now: 5_000_000 };
  return { tracker: new MemoryTracker({ logger: pino({ level: "silent" }), now: () => clock.now, id: "t" }), clock };
}

describe("rebuild grace after an empty start", () => {
  it("a fresh cluster (nobody re-announcing) gets grants at once", () => {
    const { tracker } = setup();
    tracker.register(testIdentity("a"));
    const r = tracker.lookup("a", fresh, true);
    assert.equal(r.origin.granted, true);
    assert.equal(r.retryAfterMs, undefined);
  });

  it("while a resuming session owes announces, an unknown blob is held back, then its holder appears", () => {
    const { tracker, clock } = setup();
    const holder = tracker.register(testIdentity("holder"), { resumeBlobs: 2 });
    tracker.register(testIdentity("asker"));
    const first = tracker.lookup("asker", held, true);
    assert.equal(first.origin.granted, false, "no origin grant while holders may still re-announce");
    assert.equal(first.retryAfterMs, REBUILD_RETRY_AFTER_MS);
    assert.equal(tracker.resumingSessions, 1);
    clock.now += 1_000;
    holder.announce({ digest: held, size: 10, pieceSize: 10, complete: true });
    const second = tracker.lookup("asker", held, true);
    assert.equal(second.origin.granted, false);
    assert.deepEqual(
      second.holders.map((h) => h.agentId),
      ["holder"],
    );
    assert.equal(second.retryAfterMs, undefined, "a complete holder: nothing to wait for");
  });

  it("a blob nobody holds is granted once it was held back for the hold time", () => {
    const { tracker, clock } = setup();
    tracker.register(testIdentity("holder"), { resumeBlobs: 100 });
    tracker.register(testIdentity("a"));
    tracker.register(testIdentity("b"));
    assert.equal(tracker.lookup("a", fresh, true).retryAfterMs, REBUILD_RETRY_AFTER_MS);
    clock.now += DEFAULT_REBUILD_HOLD_MS - 1;
    assert.equal(tracker.lookup("b", fresh, true).origin.granted, false, "held from the first lookup, not from each asker's");
    clock.now += 1;
    const granted = tracker.lookup("b", fresh, true);
    assert.equal(granted.origin.granted, true, "one agent gets the grant as usual");
    assert.equal(granted.retryAfterMs, undefined);
    const other = tracker.lookup("a", fresh, true);
    assert.deepEqual(other.origin, { granted: false, granteeAgentId: "b" }, "single flight as usual");
  });

  it("ends when every resuming session has re-announced and the settle time passed, and at the latest after the maximum", () => {
    const { tracker, clock } = setup();
    const s = tracker.register(testIdentity("holder"), { resumeBlobs: 1 });
    tracker.register(testIdentity("a"));
    s.announce({ digest: held, size: 10, pieceSize: 10, complete: true });
    assert.equal(tracker.resumingSessions, 0);
    assert.equal(tracker.lookup("a", testDigest("x"), true).retryAfterMs, REBUILD_RETRY_AFTER_MS, "agents may still be reconnecting");
    clock.now += DEFAULT_REBUILD_SETTLE_MS;
    assert.equal(tracker.lookup("a", testDigest("y"), true).origin.granted, true);

    const other = setup();
    other.tracker.register(testIdentity("slow"), { resumeBlobs: 1_000 });
    other.tracker.register(testIdentity("a"));
    other.clock.now += DEFAULT_REBUILD_MAX_MS;
    assert.equal(
      other.tracker.lookup("a", fresh, true).origin.granted,
      true,
      "a session that never finishes does not keep the origin closed",
    );
  });

  it("an agent resuming long after the tracker started opens no grace; an empty tracker starts over", () => {
    const { tracker, clock } = setup();
    const a = tracker.register(testIdentity("a"));
    clock.now += DEFAULT_REBUILD_MAX_MS;
    tracker.register(testIdentity("late"), { resumeBlobs: 50 });
    assert.equal(tracker.lookup("a", fresh, true).origin.granted, true);
    a.close();
    tracker.disconnect("late");
    tracker.register(testIdentity("back"), { resumeBlobs: 50 });
    assert.equal(
      tracker.lookup("back", testDigest("z"), true).retryAfterMs,
      REBUILD_RETRY_AFTER_MS,
      "a tracker that emptied rebuilds again",
    );
  });

  it("a dropped session owes nothing; the settings are checked", () => {
    const clock = { now: 0 };
    const grace = new RebuildGrace({ now: () => clock.now, settleMs: 0 });
    grace.registered("a", 3, 0);
    assert.equal(grace.pendingSessions, 1);
    grace.announced("a");
    grace.dropped("a");
    assert.equal(grace.pendingSessions, 0);
    assert.equal(grace.retryAfterMs(fresh), 0);
    assert.throws(() => new RebuildGrace({ now: () => 0, settleMs: 10, maxMs: 5 }), RangeError);
    assert.throws(() => new RebuildGrace({ now: () => 0, holdMs: -1 }), RangeError);
  });
});
