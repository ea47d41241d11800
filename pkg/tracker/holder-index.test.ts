import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { MemoryTracker } from "./memory-tracker.js";
import { bitmapOf, testDigest, testIdentity } from "./testing/helpers.js";

const digest = testDigest("crowded");

/** A seeded uniform source, so the sampled tiers are the same on every run. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

function tracker(maxLookupHolders: number): MemoryTracker {
  return new MemoryTracker({ logger: pino({ level: "silent" }), maxLookupHolders, random: seeded(7), id: "t" });
}

describe("MemoryTracker with many holders", () => {
  it("answers at most maxLookupHolders, best tiers first: same node, same zone complete, same zone partial, others", () => {
    const t = tracker(8);
    t.register(testIdentity("asker", "n-asker", "z1"));
    // 300 partial holders in another zone, 5 complete ones there, 3 partial in the asker's zone, one on its node.
    for (let i = 0; i < 300; i++)
      t.register(testIdentity(`far-${i}`, `n-far-${i}`, "z2")).announce({
        digest,
        size: 400,
        pieceSize: 100,
        complete: false,
        bitmap: bitmapOf(4, [i % 4]),
      });
    for (let i = 0; i < 5; i++)
      t.register(testIdentity(`far-complete-${i}`, `n-fc-${i}`, "z2")).announce({ digest, size: 400, pieceSize: 100, complete: true });
    for (let i = 0; i < 3; i++)
      t.register(testIdentity(`zone-${i}`, `n-zone-${i}`, "z1")).announce({
        digest,
        size: 400,
        pieceSize: 100,
        complete: false,
        bitmap: bitmapOf(4, [0]),
      });
    t.register(testIdentity("same-node", "n-asker", "z2")).announce({
      digest,
      size: 400,
      pieceSize: 100,
      complete: false,
      bitmap: bitmapOf(4, [1]),
    });
    const r = t.lookup("asker", digest, false);
    assert.equal(r.holders.length, 8);
    assert.equal(r.holders[0]?.agentId, "same-node");
    assert.deepEqual(
      r.holders
        .slice(1, 4)
        .map((h) => h.agentId)
        .sort(),
      ["zone-0", "zone-1", "zone-2"],
    );
    assert.ok(
      r.holders.slice(4).every((h) => h.agentId.startsWith("far-complete-")),
      "complete holders before the 300 partial ones",
    );
    assert.equal(new Set(r.holders.map((h) => h.agentId)).size, 8, "no holder twice");
  });

  it("keeps places for other zones: a crowded zone's answer still shows where its missing pieces are", () => {
    const t = tracker(10);
    t.register(testIdentity("asker", "n-asker", "z1"));
    for (let i = 0; i < 200; i++)
      t.register(testIdentity(`zone-${i}`, `n-zone-${i}`, "z1")).announce({
        digest,
        size: 400,
        pieceSize: 100,
        complete: false,
        bitmap: bitmapOf(4, []),
      });
    t.register(testIdentity("grantee", "n-grantee", "z2")).announce({
      digest,
      size: 400,
      pieceSize: 100,
      complete: false,
      bitmap: bitmapOf(4, [0, 1]),
    });
    const r = t.lookup("asker", digest, false);
    assert.equal(r.holders.length, 10);
    assert.equal(r.holders.at(-1)?.agentId, "grantee", "listed, and ranked after the same-zone holders");
    assert.ok(r.holders.slice(0, 9).every((h) => h.zone === "z1"));
  });

  it("samples a crowded tier: distinct holders, never the asker, the least loaded of the sample first", () => {
    const t = tracker(10);
    const sessions = [];
    for (let i = 0; i < 1000; i++) {
      const s = t.register(testIdentity(`p-${i}`, `n-${i}`, ""));
      s.announce({ digest, size: 800, pieceSize: 100, complete: false, bitmap: bitmapOf(8, [i % 8]) });
      s.heartbeat(i % 3 === 0 ? 0 : 5);
      sessions.push(s);
    }
    const r = t.lookup("p-0", digest, false);
    assert.equal(r.holders.length, 10);
    assert.equal(new Set(r.holders.map((h) => h.agentId)).size, 10);
    assert.ok(!r.holders.some((h) => h.agentId === "p-0"));
    // A sample of 40 from 1000 where a third are idle holds idle ones (all but certainly, and fixed by the seed).
    assert.equal(r.holders[0]?.activeUploads, 0);
    const loads = r.holders.map((h) => h.activeUploads);
    assert.deepEqual(
      loads,
      [...loads].sort((a, b) => a - b),
      "ranked by load within the tier",
    );
  });

  it("a complete holder blocks the grant by count; naming it bad, or holding the only copy oneself, does not", () => {
    const t = tracker(4);
    for (let i = 0; i < 50; i++)
      t.register(testIdentity(`p-${i}`)).announce({ digest, size: 400, pieceSize: 100, complete: false, bitmap: bitmapOf(4, [0]) });
    t.register(testIdentity("seed")).announce({ digest, size: 400, pieceSize: 100, complete: true });
    assert.equal(t.lookup("p-1", digest, true).origin.granted, false);
    assert.equal(t.lookup("p-1", digest, true, {}, ["seed"]).origin.granted, true);
    assert.equal(
      t.lookup("seed", digest, true).origin.granteeAgentId,
      "p-1",
      "the seed's own copy does not count against it, but the grant is taken",
    );
  });

  it("follows a zone change and forgets a dropped holder", () => {
    const t = tracker(1);
    t.register(testIdentity("asker", "n0", "z1"));
    t.register(testIdentity("a", "n1", "z2")).announce({ digest, size: 400, pieceSize: 100, complete: false, bitmap: bitmapOf(4, [0]) });
    t.register(testIdentity("b", "n2", "z3")).announce({ digest, size: 400, pieceSize: 100, complete: false, bitmap: bitmapOf(4, [0]) });
    t.updateZone("b", "z1");
    assert.equal(t.lookup("asker", digest, false).holders[0]?.agentId, "b", "b is in the asker's zone now");
    t.disconnect("b");
    assert.equal(t.lookup("asker", digest, false).holders[0]?.agentId, "a");
    assert.equal(t.snapshot().blobs[0]?.holders.length, 1);
  });
});
