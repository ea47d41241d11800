import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type RefreshState, loopSleepMs, pollIntervalMs, refreshDue } from "./refresh-schedule.js";
import { DEFAULT_SWARM_TUNING } from "./swarm-tuning.js";

const tuning = DEFAULT_SWARM_TUNING;
const state = (over: Partial<RefreshState>): RefreshState => ({
  nowMs: 10_000,
  lastRefreshMs: 10_000,
  needRefresh: false,
  noticed: false,
  parked: false,
  inflight: 0,
  crowded: false,
  notices: true,
  deltas: false,
  ...over,
});

describe("refresh schedule", () => {
  it("without notices polls as before notices: 500 ms, 50 ms while pieces are parked", () => {
    assert.equal(pollIntervalMs(tuning, { parked: false, notices: false, crowded: false }), 500);
    assert.equal(pollIntervalMs(tuning, { parked: true, notices: false, crowded: false }), 50);
    assert.equal(refreshDue(tuning, state({ notices: false, nowMs: 10_499 })), false);
    assert.equal(refreshDue(tuning, state({ notices: false, nowMs: 10_500 })), true);
    assert.equal(refreshDue(tuning, state({ notices: false, noticed: true, nowMs: 10_499 })), true, "a notice counts when it comes");
    assert.equal(loopSleepMs(tuning, state({ notices: false })), 100);
  });

  it("with notices polls slowly and looks up when a notice comes, no sooner than the minimum gap", () => {
    assert.equal(refreshDue(tuning, state({ nowMs: 10_000 + tuning.noticeRefreshIntervalMs - 1 })), false);
    assert.equal(refreshDue(tuning, state({ nowMs: 10_000 + tuning.noticeRefreshIntervalMs })), true);
    assert.equal(refreshDue(tuning, state({ noticed: true, nowMs: 10_000 + tuning.minLookupGapMs - 1 })), false);
    assert.equal(refreshDue(tuning, state({ noticed: true, nowMs: 10_000 + tuning.minLookupGapMs })), true);
    assert.equal(loopSleepMs(tuning, state({ noticed: true, nowMs: 10_030 })), tuning.minLookupGapMs - 30, "sleeps until the gap ends");
    assert.equal(refreshDue(tuning, state({ needRefresh: true })), true, "what the download saw itself does not wait");
  });

  it("in a crowd, a download busy on many calls leaves a notice for its poll, unless pieces wait for their hashes", () => {
    const busy = { noticed: true, nowMs: 10_000 + tuning.minLookupGapMs, inflight: tuning.noticeHungryRequests, crowded: true };
    assert.equal(refreshDue(tuning, state(busy)), false);
    assert.equal(loopSleepMs(tuning, state(busy)), tuning.announceIntervalMs);
    assert.equal(refreshDue(tuning, state({ ...busy, parked: true })), true);
    assert.equal(refreshDue(tuning, state({ ...busy, inflight: tuning.noticeHungryRequests - 1 })), true);
    assert.equal(refreshDue(tuning, state({ ...busy, crowded: false })), true, "every holder fits in an answer: always");
    assert.equal(pollIntervalMs(tuning, { parked: false, notices: true, crowded: true }), 500, "in a crowd it polls at the old pace");
    assert.equal(pollIntervalMs(tuning, { parked: true, notices: true, crowded: true }), 50);
  });

  it("with notices that carry the change, looks up on the fallback poll, a notice that says so, and a parked piece after the gap", () => {
    const deltas = { deltas: true };
    assert.equal(
      refreshDue(tuning, state({ ...deltas, needRefresh: true, nowMs: 10_000 + tuning.minLookupGapMs })),
      false,
      "a relay that missed waits for the notice",
    );
    assert.equal(
      refreshDue(tuning, state({ ...deltas, needRefresh: true, parked: true, nowMs: 10_000 + tuning.minLookupGapMs - 1 })),
      false,
    );
    assert.equal(
      refreshDue(tuning, state({ ...deltas, needRefresh: true, parked: true, nowMs: 10_000 + tuning.minLookupGapMs })),
      true,
      "a parked piece, after the gap",
    );
    assert.equal(refreshDue(tuning, state({ ...deltas, nowMs: 10_000 + tuning.noticeRefreshIntervalMs })), true, "the fallback poll");
    assert.equal(
      refreshDue(tuning, state({ ...deltas, noticed: true, nowMs: 10_000 + tuning.minLookupGapMs })),
      true,
      "a notice that says look it up",
    );
    assert.equal(
      refreshDue(tuning, state({ ...deltas, needRefresh: true, notices: false })),
      true,
      "the session lost its notices: as before",
    );
  });
});
