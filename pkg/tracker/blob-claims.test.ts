import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import type { Counter } from "prom-client";
import { ControllerMetrics } from "../metrics/index.js";
import { MAX_CLAIMS_PER_BLOB } from "./blob-claims.js";
import { isTrackerError } from "./errors.js";
import { MemoryTracker } from "./memory-tracker.js";
import { pieceHash, testDigest, testIdentity } from "./testing/helpers.js";
import type { BlobAnnouncement } from "./tracker.js";

const digest = testDigest("claims");
const PIECES = 4;
const geometry = { digest, size: PIECES * 10, pieceSize: 10 };

function setup(): { tracker: MemoryTracker; metrics: ControllerMetrics } {
  const metrics = new ControllerMetrics({ version: "test", collectDefaults: false });
  return { tracker: new MemoryTracker({ logger: pino({ level: "silent" }), metrics, id: "t" }), metrics };
}

async function count(metric: Counter, labels: Record<string, string> = {}): Promise<number> {
  const data = await metric.get();
  return data.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))?.value ?? 0;
}

/** A complete announcement with every piece hash, `salt` "" for the true ones. */
function complete(salt: string): BlobAnnouncement {
  return {
    ...geometry,
    complete: true,
    pieceHashes: Array.from({ length: PIECES }, (_, index) => ({ index, sha256: pieceHash(index, salt) })),
  };
}

const holders = (t: MemoryTracker, asker: string, excluded: readonly string[] = []): string[] =>
  t
    .lookup(asker, digest, false, {}, excluded)
    .holders.map((h) => h.agentId)
    .sort();

describe("claims about a blob, kept apart per group of agreeing announcers", () => {
  it("a rogue that announces garbage hashes first: askers that name it are granted the origin, the grantee's claim is preferred, and two honest complete copies exclude the rogue", async () => {
    const { tracker, metrics } = setup();
    const rogue = tracker.register(testIdentity("rogue"));
    const a = tracker.register(testIdentity("a"));
    const b = tracker.register(testIdentity("b"));
    tracker.register(testIdentity("c"));
    rogue.announce(complete("garbage"));
    const first = tracker.lookup("a", digest, true);
    assert.equal(first.origin.granted, false, "a complete holder blocks the grant");
    assert.deepEqual(first.pieceHashes[0], pieceHash(0, "garbage"));
    // a's pull failed its digest check; it names the rogue and is granted the origin.
    const again = tracker.lookup("a", digest, true, {}, ["rogue"]);
    assert.equal(again.origin.granted, true);
    assert.deepEqual(again.holders, []);
    a.announce({
      ...geometry,
      complete: false,
      bitmap: Uint8Array.of(0b1000_0000),
      pieceHashes: [{ index: 0, sha256: pieceHash(0) }],
    });
    // The rogue's claim has a complete holder, a's has only the origin grantee: the grantee's is trusted.
    const forB = tracker.lookup("b", digest, false);
    assert.deepEqual(forB.pieceHashes[0], pieceHash(0));
    assert.deepEqual(
      forB.holders.map((h) => h.agentId),
      ["a"],
    );
    a.announce(complete(""));
    assert.deepEqual(holders(tracker, "c"), ["a"], "the last grantee's claim stays preferred after it completed");
    assert.equal(await count(metrics.agentsExcluded), 0, "one complete copy against another decides nothing");
    b.announce(complete(""));
    assert.equal(await count(metrics.agentsExcluded), 1);
    assert.deepEqual(holders(tracker, "c"), ["a", "b"]);
    assert.deepEqual(holders(tracker, "c", ["a", "b"]), [], "the rogue's claim is gone");
    assert.equal(tracker.snapshot().blobs.length, 1);
    assert.throws(
      () => {
        rogue.announce(complete("garbage"));
      },
      (e: unknown) => isTrackerError(e, "ERR_TRACKER_INVALID_ARGUMENT") && /contradict/.test(e.message),
    );
    assert.throws(() => {
      rogue.announce(complete(""));
    }, "excluded for the blob, even with the right hashes");
    assert.equal(await count(metrics.requestsRejected, { reason: "excluded" }), 2);
    assert.equal(tracker.holdsComplete("rogue", digest), false);
    assert.equal(rogue.open, true, "excluded for this blob only, not ended");
  });

  it("two agents on one node do not corroborate a claim", async () => {
    const { tracker, metrics } = setup();
    const honest = tracker.register(testIdentity("honest"));
    const x1 = tracker.register(testIdentity("x1", "node-x"));
    const x2 = tracker.register(testIdentity("x2", "node-x"));
    tracker.register(testIdentity("asker"));
    honest.announce(complete(""));
    x1.announce(complete("liar"));
    x2.announce(complete("liar"));
    assert.equal(await count(metrics.agentsExcluded), 0);
    assert.equal(tracker.snapshot().blobs.length, 2);
    assert.deepEqual(holders(tracker, "asker"), ["x1", "x2"], "more holders wins the tie between uncorroborated claims");
    assert.deepEqual(holders(tracker, "asker", ["x1", "x2"]), ["honest"]);
  });

  it("a partial member of a contradicted claim is forgotten, not excluded: it may announce again", async () => {
    const { tracker, metrics } = setup();
    const rogue = tracker.register(testIdentity("rogue"));
    const victim = tracker.register(testIdentity("victim"));
    const a = tracker.register(testIdentity("a"));
    const b = tracker.register(testIdentity("b"));
    tracker.register(testIdentity("c"));
    rogue.announce(complete("garbage"));
    victim.announce({
      ...geometry,
      complete: false,
      bitmap: Uint8Array.of(0b1000_0000),
      pieceHashes: [{ index: 0, sha256: pieceHash(0, "garbage") }],
    });
    a.announce(complete(""));
    b.announce(complete(""));
    assert.equal(await count(metrics.agentsExcluded), 1, "only the complete liar");
    assert.deepEqual(holders(tracker, "c"), ["a", "b"]);
    victim.announce({
      ...geometry,
      complete: false,
      bitmap: Uint8Array.of(0b0100_0000),
      pieceHashes: [{ index: 1, sha256: pieceHash(1) }],
    });
    assert.deepEqual(holders(tracker, "c"), ["a", "b", "victim"]);
  });

  it(`refuses the announce that would make a claim past ${MAX_CLAIMS_PER_BLOB} disagreeing ones`, async () => {
    const { tracker, metrics } = setup();
    for (let i = 0; i < MAX_CLAIMS_PER_BLOB; i++) tracker.register(testIdentity(`s${i}`)).announce(complete(`v${i}`));
    const late = tracker.register(testIdentity("late"));
    assert.throws(
      () => {
        late.announce(complete("another"));
      },
      (e: unknown) => isTrackerError(e, "ERR_TRACKER_INVALID_ARGUMENT") && /agrees with no claim/.test(e.message),
    );
    assert.equal(await count(metrics.requestsRejected, { reason: "conflict" }), 1);
    late.announce(complete("v2"));
    assert.deepEqual(
      tracker.snapshot().blobs.map((b) => b.holders.map((h) => h.agentId).sort()),
      [["late", "s2"]],
      "agreeing with one is always possible; two nodes' complete copies then win over the rest",
    );
    assert.equal(await count(metrics.agentsExcluded), MAX_CLAIMS_PER_BLOB - 1);
  });
});
