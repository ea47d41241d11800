import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { isTrackerError } from "./errors.js";
import { LocalTracker } from "./local-tracker.js";
import { StaticMembership } from "./membership.js";
import { MemoryTracker } from "./memory-tracker.js";
import { runTrackerConformance } from "./testing/conformance.js";
import { localHarness } from "./testing/harnesses.js";
import { eventually, testDigest, testIdentity } from "./testing/helpers.js";

runTrackerConformance("LocalTracker", localHarness);

describe("LocalTracker", () => {
  const logger = pino({ level: "silent" });

  it("throws ERR_TRACKER_PERMISSION_DENIED when the membership refuses the agent", () => {
    const tracker = new MemoryTracker({ logger });
    assert.throws(
      () => new LocalTracker({ tracker, identity: testIdentity("a", "node-x"), logger, membership: new StaticMembership(["node-y"]) }),
      (e: unknown) => isTrackerError(e, "ERR_TRACKER_PERMISSION_DENIED"),
    );
    assert.equal(tracker.snapshot().agents.length, 0);
  });

  it("registers again and re-announces its inventory after the tracker drops it", async () => {
    const tracker = new MemoryTracker({ logger });
    const changes: boolean[] = [];
    const a = new LocalTracker({
      tracker,
      identity: testIdentity("a"),
      logger,
      reregisterDelayMs: 10,
      onConnectionChange: (c) => changes.push(c),
    });
    try {
      a.announce({ digest: testDigest("x"), size: 10, pieceSize: 10, complete: true });
      a.setActiveUploads(3);
      tracker.disconnect("a");
      assert.equal(a.connected, false);
      await assert.rejects(a.lookup(testDigest("x"), { wantOriginGrant: false }), (e: unknown) =>
        isTrackerError(e, "ERR_TRACKER_UNAVAILABLE"),
      );
      await eventually(() => {
        assert.equal(a.connected, true);
      });
      assert.deepEqual(changes, [true, false, true]);
      const snapshot = tracker.snapshot();
      assert.deepEqual(
        snapshot.blobs.map((b) => b.digest),
        [testDigest("x")],
      );
      assert.equal(snapshot.agents[0]?.activeUploads, 3);
    } finally {
      await a.close();
    }
  });
});
