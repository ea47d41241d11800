import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isTrackerError } from "../errors.js";
import { runGrantConformance } from "./conformance-grants.js";
import { runTagConformance } from "./conformance-tags.js";
import { type TrackerHarnessFactory, withHarness } from "./harness.js";
import { FAST_CLIENT_OPTIONS } from "./harnesses.js";
import { bitmapOf, eventually, pieceHash, sleep, testDigest, testIdentity } from "./helpers.js";

export {
  CONFORMANCE_STALL_TIMEOUT_MS,
  type TrackerHarness,
  type TrackerHarnessFactory,
  type TrackerHarnessOptions,
  withHarness,
} from "./harness.js";

/** The behaviour every agent-side Tracker must show, whatever carries it to the tracker. */
export function runTrackerConformance(name: string, factory: TrackerHarnessFactory): void {
  describe(`Tracker conformance: ${name}`, () => {
    runInventoryConformance(factory);
    runGrantConformance(factory);
    runTagConformance(factory);
    runOutageConformance(factory);
  });
}

function runInventoryConformance(factory: TrackerHarnessFactory): void {
  const digest = testDigest("a");

  it("a lookup finds the announced holder with its identity and the blob's geometry", () =>
    withHarness(factory, async (h) => {
      const a = await h.agent(testIdentity("a"));
      const b = await h.agent(testIdentity("b"));
      a.announce({ digest, size: 1000, pieceSize: 100, complete: true });
      const result = await eventually(async () => {
        const r = await b.lookup(digest, { wantOriginGrant: false });
        assert.equal(r.holders.length, 1);
        return r;
      });
      assert.equal(result.size, 1000);
      assert.equal(result.pieceSize, 100);
      assert.deepEqual(result.holders[0], { ...testIdentity("a"), complete: true, bitmap: new Uint8Array(0), activeUploads: 0 });
      assert.deepEqual(result.origin, { granted: false, granteeAgentId: undefined });
      assert.equal(result.pieceHashes.length, 10);
      assert.ok(result.pieceHashes.every((hash) => hash === undefined));
      const own = await a.lookup(digest, { wantOriginGrant: false });
      assert.deepEqual(own.holders, [], "the asking agent is never among the holders");
      assert.equal(own.size, 1000);
      const unknown = await b.lookup(testDigest("unknown"), { wantOriginGrant: false });
      assert.deepEqual(unknown, {
        size: 0,
        pieceSize: 0,
        holders: [],
        pieceHashes: [],
        origin: { granted: false, granteeAgentId: undefined },
        askerZone: "",
      });
    }));

  it("a later announce replaces the earlier one of the same digest", () =>
    withHarness(factory, async (h) => {
      const a = await h.agent(testIdentity("a"));
      const b = await h.agent(testIdentity("b"));
      a.announce({ digest, size: 1000, pieceSize: 100, complete: false, bitmap: bitmapOf(10, [0]) });
      await eventually(async () => {
        assert.deepEqual((await b.lookup(digest, { wantOriginGrant: false })).holders[0]?.bitmap, bitmapOf(10, [0]));
      });
      a.announce({ digest, size: 1000, pieceSize: 100, complete: false, bitmap: bitmapOf(10, [0, 1, 9]) });
      await eventually(async () => {
        assert.deepEqual((await b.lookup(digest, { wantOriginGrant: false })).holders[0]?.bitmap, bitmapOf(10, [0, 1, 9]));
      });
      a.announce({ digest, size: 1000, pieceSize: 100, complete: true });
      const done = await eventually(async () => {
        const r = await b.lookup(digest, { wantOriginGrant: false });
        assert.equal(r.holders[0]?.complete, true);
        return r;
      });
      assert.equal(done.holders.length, 1);
      assert.deepEqual(done.holders[0]?.bitmap, new Uint8Array(0));
    }));

  it("ranks holders: same node, same zone, complete, fewest uploads, most pieces", () =>
    withHarness(factory, async (h) => {
      const asker = await h.agent(testIdentity("asker", "n1", "z1"));
      const holders: [string, string, string, boolean, number[], number][] = [
        ["far-partial-2", "n7", "z2", false, [0, 1], 0],
        ["far-complete-busy", "n4", "z2", true, [], 5],
        ["zone-partial", "n2", "z1", false, [0, 1, 2], 0],
        ["far-partial-3", "n6", "z2", false, [0, 1, 2], 0],
        ["same-node", "n1", "z1", false, [0], 9],
        ["far-complete-idle", "n5", "z2", true, [], 0],
        ["zone-complete", "n3", "z1", true, [], 3],
      ];
      for (const [id, node, zone, complete, held, uploads] of holders) {
        const t = await h.agent(testIdentity(id, node, zone));
        t.announce({ digest, size: 400, pieceSize: 100, complete, ...(complete ? {} : { bitmap: bitmapOf(4, held) }) });
        t.setActiveUploads(uploads);
      }
      const expected = [
        "same-node",
        "zone-complete",
        "zone-partial",
        "far-complete-idle",
        "far-complete-busy",
        "far-partial-3",
        "far-partial-2",
      ];
      await eventually(async () => {
        const r = await asker.lookup(digest, { wantOriginGrant: false });
        assert.deepEqual(
          r.holders.map((x) => x.agentId),
          expected,
        );
        assert.equal(r.holders.find((x) => x.agentId === "far-complete-busy")?.activeUploads, 5);
        assert.equal(r.askerZone, "z1", "the asker learns the zone it is ranked by");
      });
    }));

  it("an empty zone is no zone: agents without one are not grouped together", () =>
    withHarness(factory, async (h) => {
      const asker = await h.agent(testIdentity("asker", "n1", ""));
      const partial = await h.agent(testIdentity("partial", "n2", ""));
      const complete = await h.agent(testIdentity("complete", "n3", "z9"));
      partial.announce({ digest, size: 400, pieceSize: 100, complete: false, bitmap: bitmapOf(4, [0, 1, 2]) });
      complete.announce({ digest, size: 400, pieceSize: 100, complete: true });
      await eventually(async () => {
        const r = await asker.lookup(digest, { wantOriginGrant: false });
        assert.deepEqual(
          r.holders.map((x) => x.agentId),
          ["complete", "partial"],
        );
      });
    }));

  it("piece hashes accumulate index-aligned across agreeing agents; one that contradicts them is kept apart", () =>
    withHarness(factory, async (h) => {
      const a = await h.agent(testIdentity("a"));
      const b = await h.agent(testIdentity("b"));
      const c = await h.agent(testIdentity("c"));
      const d = await h.agent(testIdentity("d"));
      a.announce({
        digest,
        size: 500,
        pieceSize: 100,
        complete: false,
        bitmap: bitmapOf(5, [0, 2]),
        pieceHashes: [
          { index: 0, sha256: pieceHash(0) },
          { index: 2, sha256: pieceHash(2) },
        ],
      });
      await eventually(async () => {
        assert.equal((await c.lookup(digest, { wantOriginGrant: false })).holders.length, 1);
      });
      b.announce({
        digest,
        size: 500,
        pieceSize: 100,
        complete: false,
        bitmap: bitmapOf(5, [0, 1]),
        pieceHashes: [
          { index: 0, sha256: pieceHash(0, "bad") },
          { index: 1, sha256: pieceHash(1, "bad") },
        ],
      });
      d.announce({
        digest,
        size: 500,
        pieceSize: 100,
        complete: false,
        bitmap: bitmapOf(5, [0, 1]),
        pieceHashes: [
          { index: 0, sha256: pieceHash(0) },
          { index: 1, sha256: pieceHash(1) },
        ],
      });
      await eventually(async () => {
        const r = await c.lookup(digest, { wantOriginGrant: false });
        assert.deepEqual(r.pieceHashes, [pieceHash(0), pieceHash(1), pieceHash(2), undefined, undefined]);
        assert.deepEqual(r.holders.map((x) => x.agentId).sort(), ["a", "d"], "b's claim is not mixed in");
      });
      const other = await c.lookup(digest, { wantOriginGrant: false, excludedAgents: ["a", "d"] });
      assert.deepEqual(other.pieceHashes, [pieceHash(0, "bad"), pieceHash(1, "bad"), undefined, undefined, undefined]);
      assert.deepEqual(
        other.holders.map((x) => x.agentId),
        ["b"],
      );
    }));

  it("withdraw and close remove what the agent announced", () =>
    withHarness(factory, async (h) => {
      const a = await h.agent(testIdentity("a"));
      const b = await h.agent(testIdentity("b"));
      const other = testDigest("other");
      a.announce({ digest, size: 100, pieceSize: 100, complete: true });
      a.announce({ digest: other, size: 100, pieceSize: 100, complete: true });
      b.announce({ digest: other, size: 100, pieceSize: 100, complete: true });
      const c = await h.agent(testIdentity("c"));
      await eventually(async () => {
        assert.equal((await c.lookup(other, { wantOriginGrant: false })).holders.length, 2);
      });
      a.withdraw(digest);
      await eventually(async () => {
        assert.deepEqual(await c.lookup(digest, { wantOriginGrant: false }), {
          size: 0,
          pieceSize: 0,
          holders: [],
          pieceHashes: [],
          origin: { granted: false, granteeAgentId: undefined },
          askerZone: "",
        });
      });
      await a.close();
      assert.equal(a.connected, false);
      await eventually(async () => {
        assert.deepEqual(
          (await c.lookup(other, { wantOriginGrant: false })).holders.map((x) => x.agentId),
          ["b"],
        );
      });
      await assert.rejects(a.lookup(other, { wantOriginGrant: false }), (e: unknown) => isTrackerError(e, "ERR_TRACKER_CLOSED"));
    }));

  it("a size conflicting with another agent's is kept apart without failing the agent; the older claim answers first", () =>
    withHarness(factory, async (h) => {
      const a = await h.agent(testIdentity("a"));
      const b = await h.agent(testIdentity("b"));
      const c = await h.agent(testIdentity("c"));
      a.announce({ digest, size: 1000, pieceSize: 100, complete: true });
      await eventually(async () => {
        assert.equal((await c.lookup(digest, { wantOriginGrant: false })).holders.length, 1);
      });
      b.announce({ digest, size: 2000, pieceSize: 100, complete: true });
      b.announce({ digest: testDigest("fine"), size: 10, pieceSize: 100, complete: true });
      await eventually(async () => {
        assert.equal((await c.lookup(testDigest("fine"), { wantOriginGrant: false })).holders.length, 1);
      });
      const r = await c.lookup(digest, { wantOriginGrant: false });
      assert.equal(r.size, 1000);
      assert.deepEqual(
        r.holders.map((x) => x.agentId),
        ["a"],
      );
      const bySize = await c.lookup(digest, { wantOriginGrant: false, expectedSize: 2000 });
      assert.deepEqual(
        bySize.holders.map((x) => x.agentId),
        ["b"],
        "an asker that knows the size is answered with the claim of that size",
      );
      assert.equal(b.connected, true);
    }));

  it("a malformed announcement throws ERR_TRACKER_INVALID_ARGUMENT and is not kept", () =>
    withHarness(factory, async (h) => {
      const a = await h.agent(testIdentity("a"));
      const b = await h.agent(testIdentity("b"));
      const invalid = (e: unknown): boolean => isTrackerError(e, "ERR_TRACKER_INVALID_ARGUMENT");
      assert.throws(() => {
        a.announce({ digest, size: 1000, pieceSize: 100, complete: false, bitmap: new Uint8Array(1) });
      }, invalid);
      assert.throws(() => {
        a.announce({ digest, size: 1000, pieceSize: 100, complete: true, pieceHashes: [{ index: 0, sha256: new Uint8Array(31) }] });
      }, invalid);
      assert.throws(() => {
        a.announce({ digest, size: 1000, pieceSize: 100, complete: true, pieceHashes: [{ index: 10, sha256: pieceHash(10) }] });
      }, invalid);
      assert.throws(() => {
        a.announce({ digest, size: -1, pieceSize: 100, complete: true });
      }, invalid);
      assert.throws(() => {
        a.setActiveUploads(-1);
      }, invalid);
      a.announce({ digest: testDigest("ok"), size: 10, pieceSize: 100, complete: true });
      await eventually(async () => {
        assert.equal((await b.lookup(testDigest("ok"), { wantOriginGrant: false })).holders.length, 1);
      });
      assert.equal((await b.lookup(digest, { wantOriginGrant: false })).holders.length, 0);
      assert.equal(a.connected, true);
    }));
}

function runOutageConformance(factory: TrackerHarnessFactory): void {
  it("re-announces the whole inventory to a restarted tracker", async (t) => {
    await withHarness(factory, async (h) => {
      if (h.restartTracker === undefined) {
        t.skip("the harness cannot restart its tracker");
        return;
      }
      const a = await h.agent(testIdentity("a"));
      const b = await h.agent(testIdentity("b"));
      const kept = testDigest("kept");
      const dropped = testDigest("dropped");
      a.announce({
        digest: kept,
        size: 300,
        pieceSize: 100,
        complete: false,
        bitmap: bitmapOf(3, [1]),
        pieceHashes: [{ index: 1, sha256: pieceHash(1) }],
      });
      a.announce({ digest: dropped, size: 100, pieceSize: 100, complete: true });
      a.withdraw(dropped);
      await eventually(async () => {
        assert.equal((await b.lookup(kept, { wantOriginGrant: false })).holders.length, 1);
      });
      await h.restartTracker();
      const started = Date.now();
      const r = await eventually(async () => {
        const result = await b.lookup(kept, { wantOriginGrant: false });
        assert.equal(result.holders.length, 1);
        return result;
      }, 5_000);
      assert.ok(Date.now() - started < 3_000, `the new tracker knew the blob after ${Date.now() - started} ms`);
      assert.deepEqual(r.holders[0]?.bitmap, bitmapOf(3, [1]));
      assert.deepEqual(r.pieceHashes, [undefined, pieceHash(1), undefined]);
      assert.equal((await b.lookup(dropped, { wantOriginGrant: false })).holders.length, 0, "a withdrawn blob is not re-announced");
      assert.equal(a.connected, true);
    });
  });

  it("lookup fails fast with ERR_TRACKER_UNAVAILABLE while the tracker is down (past the session grace)", async (t) => {
    await withHarness(factory, async (h) => {
      if (h.stopTracker === undefined) {
        t.skip("the harness cannot stop its tracker");
        return;
      }
      const a = await h.agent(testIdentity("a"));
      a.announce({ digest: testDigest("x"), size: 1, pieceSize: 100, complete: true });
      await h.stopTracker();
      await eventually(() => {
        assert.equal(a.connected, false);
      });
      // A gRPC client waits a moment for the session to come back (FAST_CLIENT_OPTIONS.sessionGraceMs).
      await sleep(FAST_CLIENT_OPTIONS.sessionGraceMs);
      for (let i = 0; i < 3; i++) {
        const started = Date.now();
        await assert.rejects(a.lookup(testDigest("x"), { wantOriginGrant: true }), (e: unknown) =>
          isTrackerError(e, "ERR_TRACKER_UNAVAILABLE"),
        );
        assert.ok(Date.now() - started < 1_500, `lookup took ${Date.now() - started} ms`);
      }
      a.announce({ digest: testDigest("y"), size: 1, pieceSize: 100, complete: true });
      a.withdraw(testDigest("x"));
    });
  });
}
