import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { ControllerMetrics } from "../metrics/index.js";
import { GrpcTrackerClient } from "./grpc-tracker-client.js";
import { MemoryTracker } from "./memory-tracker.js";
import type { TrackerEvent } from "./tracker-events.js";
import { REBUILD_RETRY_AFTER_MS } from "./rebuild-grace.js";
import { TrackerServer } from "./tracker-server.js";
import { FAST_CLIENT_OPTIONS } from "./testing/harnesses.js";
import { eventually, testDigest, testIdentity } from "./testing/helpers.js";

const logger = pino({ level: "silent" });
const BLOBS = 6;

describe("fail-over without a storm (gRPC)", () => {
  it("after a lost session the agent registers at once, says what follows, and re-announces in batches; the tracker grants nothing meanwhile", async () => {
    // The hold is long here so that the answer cannot depend on how fast the test runs.
    const tracker = new MemoryTracker({ logger, rebuildHoldMs: 60_000 });
    const server = await TrackerServer.start({ host: "127.0.0.1", port: 0, tracker, logger });
    const reannounce = { batchBlobs: 2, batchIntervalMs: 20 };
    const a = new GrpcTrackerClient({ address: server.address, identity: testIdentity("a"), logger, ...FAST_CLIENT_OPTIONS, reannounce });
    const b = new GrpcTrackerClient({ address: server.address, identity: testIdentity("b"), logger, ...FAST_CLIENT_OPTIONS, reannounce });
    try {
      await a.whenConnected(AbortSignal.timeout(5_000));
      await b.whenConnected(AbortSignal.timeout(5_000));
      const digests = Array.from({ length: BLOBS }, (_, i) => testDigest(`inventory ${i}`));
      for (const digest of digests) a.announce({ digest, size: 100, pieceSize: 100, complete: true });
      await eventually(() => {
        assert.equal(tracker.snapshot().agents.find((x) => x.identity.agentId === "a")?.blobs.length, BLOBS);
      });
      assert.equal(tracker.lookup("b", testDigest("unheld"), true).origin.granted, true, "before the fail-over: grants as usual");

      const events: TrackerEvent[] = [];
      const unsubscribe = tracker.subscribe((event) => events.push(event));
      // What a fail-over does to the tracker's state: every session ends, the agents come back to an empty tracker.
      assert.equal(server.endSessions("fail-over"), 2);
      await eventually(() => {
        assert.equal(tracker.snapshot().agents.find((x) => x.identity.agentId === "a")?.blobs.length, BLOBS);
      }, 5_000);
      unsubscribe();
      const ofA = events.filter((e) => ("agentId" in e ? e.agentId : e.identity.agentId) === "a");
      const registeredAt = ofA.findIndex((e) => e.type === "registered");
      assert.ok(registeredAt >= 0, "a registered again");
      assert.ok(
        ofA.slice(0, registeredAt).every((e) => e.type !== "holding" || !e.complete),
        "nothing of its inventory arrived before it registered",
      );
      assert.equal(ofA.slice(registeredAt).filter((e) => e.type === "holding" && e.complete).length, BLOBS, "then the whole inventory");
      assert.equal(tracker.resumingSessions, 0, "a owes nothing once re-announced");

      const held = await b.lookup(digests[0] ?? testDigest("x"), { wantOriginGrant: true });
      assert.deepEqual(
        held.holders.map((h) => h.agentId),
        ["a"],
      );
      const unknown = await b.lookup(testDigest("new during the rebuild"), { wantOriginGrant: true });
      assert.equal(unknown.origin.granted, false, "no origin grant for an unknown blob while agents may still be coming back");
      assert.equal(unknown.retryAfterMs, REBUILD_RETRY_AFTER_MS, "and the agent is told to ask again");
    } finally {
      await a.close();
      await b.close();
      await server.close();
    }
  });

  it("the announce gate pauses a session over the rate and loses nothing", async () => {
    const metrics = new ControllerMetrics({ version: "test", collectDefaults: false });
    const tracker = new MemoryTracker({ logger });
    const server = await TrackerServer.start({
      host: "127.0.0.1",
      port: 0,
      tracker,
      logger,
      metrics,
      announcesPerSecond: 200,
      announceBurst: 5,
    });
    const a = new GrpcTrackerClient({ address: server.address, identity: testIdentity("a"), logger, ...FAST_CLIENT_OPTIONS });
    try {
      await a.whenConnected(AbortSignal.timeout(5_000));
      const count = 60;
      for (let i = 0; i < count; i++) a.announce({ digest: testDigest(`gated ${i}`), size: 100, pieceSize: 100, complete: true });
      await eventually(() => {
        assert.equal(tracker.snapshot().agents[0]?.blobs.length, count);
      }, 10_000);
      const pauses = (await metrics.announcePauses.get()).values[0]?.value ?? 0;
      assert.ok(pauses >= 1, `the session was paused (${pauses} times)`);
      const lookup = await a.lookup(testDigest("gated 0"), { wantOriginGrant: false });
      assert.equal(lookup.size, 100, "lookups are served while announces are gated");
    } finally {
      await a.close();
      await server.close();
    }
  });
});
