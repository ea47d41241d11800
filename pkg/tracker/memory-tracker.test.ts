import assert from "node:assert/strict";
import { memoryUsage } from "node:process";
import { describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { pino } from "pino";
import type { Counter, Gauge } from "prom-client";
import { ControllerMetrics } from "../metrics/index.js";
import { isTrackerError } from "./errors.js";
import { StaticMembership } from "./membership.js";
import { HOLDER_COST_BYTES, MEMORY_BUDGET_PER_AGENT_BYTES, PIECE_COST_BYTES, RECORD_COST_BYTES } from "./blob-ledger.js";
import { MemoryTracker } from "./memory-tracker.js";
import { GRANT_SPREAD_MS } from "./origin-grants.js";
import type { SessionCloseReason } from "./tracker-session.js";
import { MAX_PIECES_PER_BLOB } from "./validation.js";
import { bitmapOf, pieceHash, testDigest, testIdentity } from "./testing/helpers.js";

const digest = testDigest("blob");
const STALL_MS = 10_000;

function setup(): { tracker: MemoryTracker; metrics: ControllerMetrics; clock: { now: number } } {
  const clock = { now: 1_000_000 };
  const metrics = new ControllerMetrics({ version: "test", collectDefaults: false });
  const tracker = new MemoryTracker({
    logger: pino({ level: "silent" }),
    metrics,
    grantStallTimeoutMs: STALL_MS,
    now: () => clock.now,
    id: "t1",
  });
  return { tracker, metrics, clock };
}

async function value(metric: Counter | Gauge, labels: Record<string, string> = {}): Promise<number> {
  const data = await metric.get();
  const found = data.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l));
  return found?.value ?? 0;
}

const code = (c: string) => (e: unknown) => isTrackerError(e) && e.code === c;

describe("MemoryTracker", () => {
  it("a complete holder blocks the origin grant unless the asker names it as bad", () => {
    const { tracker } = setup();
    const bad = tracker.register(testIdentity("bad"));
    bad.announce({ digest, size: 10, pieceSize: 5, complete: true });
    tracker.register(testIdentity("a"));
    tracker.register(testIdentity("b"));
    assert.equal(tracker.lookup("a", digest, true).origin.granted, false, "peers can supply it");
    const named = tracker.lookup("a", digest, true, {}, ["bad"]);
    assert.equal(named.origin.granted, true);
    assert.deepEqual(named.holders, [], "every holder of the only claim is excluded: the asker is answered with none");
    assert.equal(
      tracker.lookup("b", digest, false).holders.some((h) => h.agentId === "bad"),
      true,
      "the holder is still listed for others",
    );
    assert.equal(tracker.lookup("b", digest, true, {}, ["bad"]).origin.granted, false, "one grantee at a time");
    assert.equal(tracker.lookup("b", digest, true, {}, ["bad"]).origin.granteeAgentId, "a");
  });

  it("refuses announces and lookups from agents without a session", () => {
    const { tracker } = setup();
    assert.throws(() => {
      tracker.lookup("ghost", digest, true);
    }, code("ERR_TRACKER_NOT_REGISTERED"));
    assert.throws(() => {
      tracker.announce("ghost", { digest, size: 1, pieceSize: 1, complete: true });
    }, code("ERR_TRACKER_NOT_REGISTERED"));
    assert.throws(() => tracker.register({ ...testIdentity("a"), agentId: "" }), code("ERR_TRACKER_INVALID_ARGUMENT"));
    assert.throws(() => tracker.register({ ...testIdentity("a"), peerAddress: "no-port" }), code("ERR_TRACKER_INVALID_ARGUMENT"));
    assert.throws(() => tracker.register({ ...testIdentity("a"), nodeName: "has space" }), code("ERR_TRACKER_INVALID_ARGUMENT"));
  });

  it("a new session of the same agent supersedes the old one and drops its state", () => {
    const { tracker } = setup();
    const reasons: SessionCloseReason[] = [];
    const old = tracker.register(testIdentity("a"), { onClose: (r) => reasons.push(r) });
    old.announce({ digest, size: 10, pieceSize: 5, complete: true });
    tracker.lookup("a", digest, true);
    const fresh = tracker.register(testIdentity("a"));
    assert.deepEqual(reasons, ["superseded"]);
    assert.equal(old.open, false);
    assert.equal(fresh.open, true);
    assert.throws(() => {
      old.announce({ digest, size: 10, pieceSize: 5, complete: true });
    }, code("ERR_TRACKER_CLOSED"));
    assert.deepEqual(tracker.snapshot().blobs, []);
    assert.deepEqual(tracker.snapshot().grants, []);
    old.close();
    assert.equal(fresh.open, true, "closing the superseded handle leaves the new session alone");
  });

  it("disconnect(agentId) drops everything at once and tells the session", async () => {
    const { tracker, metrics } = setup();
    const reasons: SessionCloseReason[] = [];
    const a = tracker.register(testIdentity("a"), { onClose: (r) => reasons.push(r) });
    tracker.register(testIdentity("b"));
    a.announce({ digest, size: 10, pieceSize: 5, complete: true });
    a.announce({ digest: testDigest("2"), size: 10, pieceSize: 5, complete: false, bitmap: bitmapOf(2, [1]) });
    assert.equal(await value(metrics.blobs), 2);
    assert.equal(await value(metrics.agents), 2);
    assert.equal(tracker.disconnect("a"), true);
    assert.equal(tracker.disconnect("a"), false);
    assert.deepEqual(reasons, ["dropped"]);
    assert.equal(a.open, false);
    assert.equal(await value(metrics.blobs), 0);
    assert.equal(await value(metrics.agents), 1);
    assert.deepEqual(tracker.lookup("b", digest, false).holders, []);
  });

  it("keeps a size that conflicts with other agents' apart, and lets an agent correct its own", async () => {
    const { tracker, metrics } = setup();
    const a = tracker.register(testIdentity("a"));
    const b = tracker.register(testIdentity("b"));
    tracker.register(testIdentity("c"));
    a.announce({ digest, size: 100, pieceSize: 10, complete: true });
    a.announce({ digest, size: 200, pieceSize: 10, complete: true });
    assert.equal(tracker.lookup("c", digest, false).size, 200, "the only holder corrected its own claim");
    assert.equal(tracker.snapshot().blobs.length, 1);
    b.announce({ digest, size: 200, pieceSize: 20, complete: true });
    assert.equal(tracker.snapshot().blobs.length, 2, "two claims, one per geometry");
    const first = tracker.lookup("c", digest, false);
    assert.deepEqual([first.size, first.pieceSize, first.holders.map((h) => h.agentId)], [200, 10, ["a"]], "the older claim wins a tie");
    const bySize = tracker.lookup("c", digest, false, {}, [], 200);
    assert.equal(bySize.pieceSize, 10);
    assert.equal(tracker.lookup("c", digest, false, {}, ["a"]).pieceSize, 20, "a's claim has no usable holder: b's");
    const unknownSize = tracker.lookup("c", digest, true, {}, [], 300);
    assert.deepEqual(
      [unknownSize.size, unknownSize.holders.length, unknownSize.origin.granted],
      [0, 0, true],
      "no claim of the size the asker knows",
    );
    assert.equal(await value(metrics.pieceHashConflicts), 0, "a new claim is not a conflict with one's own");
  });

  it("the only holder of a claim may change its hashes (counted); a holder contradicting others moves to a claim of its own with what it held", async () => {
    const { tracker, metrics } = setup();
    const a = tracker.register(testIdentity("a"));
    const b = tracker.register(testIdentity("b"));
    tracker.register(testIdentity("c"));
    a.announce({
      digest,
      size: 25,
      pieceSize: 10,
      complete: false,
      bitmap: Uint8Array.of(0xff),
      pieceHashes: [{ index: 2, sha256: pieceHash(2) }],
    });
    a.announce({
      digest,
      size: 25,
      pieceSize: 10,
      complete: false,
      bitmap: Uint8Array.of(0xff),
      pieceHashes: [
        { index: 2, sha256: pieceHash(2, "x") },
        { index: 0, sha256: pieceHash(0) },
      ],
    });
    const r = tracker.lookup("c", digest, false);
    assert.deepEqual(r.pieceHashes, [pieceHash(0), undefined, pieceHash(2, "x")]);
    assert.deepEqual(r.holders[0]?.bitmap, Uint8Array.of(0b1110_0000), "bits past the end cleared");
    assert.equal(await value(metrics.pieceHashConflicts), 1);
    // b joins a's claim (it agrees), then contradicts piece 2: it leaves with piece 0's hash, which it held.
    b.announce({ digest, size: 25, pieceSize: 10, complete: false, bitmap: bitmapOf(3, [0]), pieceHashes: [] });
    assert.equal(tracker.snapshot().blobs.length, 1);
    b.announce({
      digest,
      size: 25,
      pieceSize: 10,
      complete: false,
      bitmap: bitmapOf(3, [0, 2]),
      pieceHashes: [{ index: 2, sha256: pieceHash(2) }],
    });
    assert.equal(await value(metrics.pieceHashConflicts), 2);
    const claims = tracker.snapshot().blobs;
    assert.deepEqual(
      claims.map((c) => [c.holders.map((h) => h.agentId), c.knownHashes]),
      [
        [["a"], 2],
        [["b"], 2],
      ],
    );
    const bs = tracker.lookup("c", digest, false, {}, ["a"]);
    assert.deepEqual(bs.pieceHashes, [pieceHash(0), undefined, pieceHash(2)], "a's hash of piece 2 is not in b's claim");
  });

  it("moves a grant only after a full stall timeout without an increase in held pieces", async () => {
    const { tracker, metrics, clock } = setup();
    const a = tracker.register(testIdentity("a"));
    tracker.register(testIdentity("b"));
    assert.equal(tracker.lookup("a", digest, true).origin.granted, true);
    const partial = (held: number[]) => ({ digest, size: 40, pieceSize: 10, complete: false, bitmap: bitmapOf(4, held) });
    clock.now += 5_000;
    a.announce(partial([0]));
    clock.now += STALL_MS - 1;
    assert.deepEqual(tracker.lookup("b", digest, true).origin, { granted: false, granteeAgentId: "a" });
    a.announce(partial([3]));
    clock.now += 1;
    assert.equal(tracker.lookup("a", digest, true).origin.granted, true, "a stalled grantee asking again keeps its grant");
    assert.deepEqual(tracker.lookup("b", digest, true).origin, { granted: true, granteeAgentId: "b" }, "the same count is no progress");
    assert.deepEqual(tracker.lookup("a", digest, true).origin, { granted: false, granteeAgentId: "b" });
    assert.equal(await value(metrics.grants), 2);
    assert.equal(await value(metrics.grantMoves, { reason: "stalled" }), 1);
    assert.equal(tracker.snapshot().grants[0]?.agentId, "b");
  });

  it("releases grants on disconnect (counted as a move) and on withdraw or complete (not a move)", async () => {
    const { tracker, metrics } = setup();
    const a = tracker.register(testIdentity("a"));
    const b = tracker.register(testIdentity("b"));
    tracker.register(testIdentity("c"));
    assert.equal(tracker.lookup("a", digest, true).origin.granted, true);
    a.close();
    assert.deepEqual(tracker.lookup("b", digest, true).origin, { granted: true, granteeAgentId: "b" });
    assert.equal(await value(metrics.grantMoves, { reason: "disconnected" }), 1);
    b.withdraw(digest);
    assert.equal(tracker.lookup("c", digest, true).origin.granted, true);
    assert.equal(await value(metrics.grantMoves, { reason: "disconnected" }), 1);
    assert.equal(await value(metrics.grants), 3);
  });

  it("spreads origin grants: an agent already fetching two blobs gets a third only if no other agent asks for it first", () => {
    const { tracker, clock } = setup();
    const a = tracker.register(testIdentity("a"));
    tracker.register(testIdentity("b"));
    const [x, y, z, w] = ["x", "y", "z", "w"].map((s) => testDigest(s));
    assert.ok(x && y && z && w);
    assert.equal(tracker.lookup("a", x, true).origin.granted, true);
    assert.equal(tracker.lookup("a", y, true).origin.granted, true);
    // The third: not yet, ask again in GRANT_SPREAD_MS; no grantee meanwhile, so it does not wait for one.
    const third = tracker.lookup("a", z, true);
    assert.deepEqual(third.origin, { granted: false, granteeAgentId: undefined });
    assert.equal(third.retryAfterMs, GRANT_SPREAD_MS);
    clock.now += 100;
    assert.equal(tracker.lookup("a", z, true).retryAfterMs, GRANT_SPREAD_MS - 100, "asking early changes nothing");
    // Another agent asking meanwhile takes it at once; the busy one is then told who fetches it.
    assert.deepEqual(tracker.lookup("b", z, true).origin, { granted: true, granteeAgentId: "b" });
    assert.deepEqual(tracker.lookup("a", z, true).origin, { granted: false, granteeAgentId: "b" });
    // Nobody else asks for w: the busy agent gets it once the moment has passed.
    assert.equal(tracker.lookup("a", w, true).retryAfterMs, GRANT_SPREAD_MS);
    clock.now += GRANT_SPREAD_MS;
    const later = tracker.lookup("a", w, true);
    assert.equal(later.origin.granted, true);
    assert.equal(later.retryAfterMs, undefined);
    // A grant that ends (its blob complete) frees a place: with one grant left, the next blob is granted at once.
    assert.equal(tracker.lookup("a", testDigest("v"), true).retryAfterMs, GRANT_SPREAD_MS, "three grants: x, y and w");
    a.announce({ digest: x, size: 10, pieceSize: 10, complete: true });
    a.announce({ digest: w, size: 10, pieceSize: 10, complete: true });
    assert.equal(tracker.lookup("a", testDigest("u"), true).origin.granted, true);
  });

  it("a complete holder elsewhere blocks new grants but does not take a grant away", () => {
    const { tracker } = setup();
    tracker.register(testIdentity("a"));
    tracker.register(testIdentity("b"));
    const c = tracker.register(testIdentity("c"));
    assert.equal(tracker.lookup("a", digest, true).origin.granted, true);
    c.announce({ digest, size: 10, pieceSize: 10, complete: true });
    assert.deepEqual(tracker.lookup("b", digest, true).origin, { granted: false, granteeAgentId: "a" });
    assert.equal(tracker.lookup("a", digest, true).origin.granted, true);
  });

  it("counts lookups by result and heartbeats set the load", async () => {
    const { tracker, metrics } = setup();
    const a = tracker.register(testIdentity("a"));
    tracker.register(testIdentity("b"));
    a.heartbeat(7);
    assert.throws(() => {
      a.heartbeat(-1);
    }, code("ERR_TRACKER_INVALID_ARGUMENT"));
    tracker.lookup("b", digest, false);
    tracker.lookup("b", digest, true);
    a.announce({ digest: testDigest("z"), size: 0, pieceSize: 10, complete: true });
    const r = tracker.lookup("b", testDigest("z"), false);
    assert.equal(r.holders[0]?.activeUploads, 7);
    assert.deepEqual(r.pieceHashes, []);
    assert.equal(await value(metrics.lookups, { result: "none" }), 1);
    assert.equal(await value(metrics.lookups, { result: "granted" }), 1);
    assert.equal(await value(metrics.lookups, { result: "holders" }), 1);
    assert.deepEqual(tracker.snapshot().agents.find((x) => x.identity.agentId === "a")?.activeUploads, 7);
  });

  it("admits sessions and lookups through the membership", async () => {
    const { tracker, metrics } = setup();
    const membership = new StaticMembership(["10.1.1.1", "node-ok"]);
    assert.throws(
      () => tracker.register(testIdentity("x", "node-x"), { membership, remoteAddress: "10.9.9.9" }),
      code("ERR_TRACKER_PERMISSION_DENIED"),
    );
    assert.throws(() => tracker.register(testIdentity("x", "node-x"), { membership }), code("ERR_TRACKER_PERMISSION_DENIED"));
    assert.equal(await value(metrics.sessionsRefused), 2);
    tracker.register(testIdentity("by-address", "node-y"), { membership, remoteAddress: "::ffff:10.1.1.1" });
    // A node name counts only when a certificate says it, not when the agent does.
    assert.throws(
      () => tracker.register(testIdentity("by-claim", "node-ok"), { membership, remoteAddress: "10.9.9.9" }),
      code("ERR_TRACKER_PERMISSION_DENIED"),
    );
    const peer = { role: "agent" as const, name: "node-ok", ips: ["10.9.9.9"] };
    tracker.register(testIdentity("by-name", "node-ok"), {
      membership,
      remoteAddress: "10.9.9.9",
      peer,
      principal: "shoal://agent/node-ok",
    });
    // Its agent id is bound to that certificate: another workload's session cannot take it over.
    assert.throws(
      () =>
        tracker.register(testIdentity("by-name", "node-ok"), { membership, remoteAddress: "10.1.1.1", principal: "shoal://agent/node-y" }),
      code("ERR_TRACKER_PERMISSION_DENIED"),
    );
    assert.throws(
      () => tracker.lookup("by-name", digest, false, { membership, remoteAddress: "10.1.1.1", principal: "shoal://agent/node-y" }),
      code("ERR_TRACKER_PERMISSION_DENIED"),
    );
    assert.equal(
      tracker.lookup("by-name", digest, false, { membership, remoteAddress: "10.9.9.9", peer, principal: "shoal://agent/node-ok" }).size,
      0,
    );
    assert.equal(tracker.lookup("by-address", digest, false, { membership, remoteAddress: "10.1.1.1" }).size, 0);
    assert.throws(
      () => tracker.lookup("by-address", digest, false, { membership, remoteAddress: "10.9.9.9" }),
      code("ERR_TRACKER_PERMISSION_DENIED"),
    );
    assert.deepEqual(
      tracker.snapshot().agents.map((a) => a.identity.agentId),
      ["by-address", "by-name"],
    );
  });

  it("charges each agent for the memory it makes the tracker hold and ends it over budget; re-announcing costs nothing", async () => {
    const { tracker, metrics } = setup();
    const greedy = tracker.register(testIdentity("greedy"));
    const fit = Math.floor(MEMORY_BUDGET_PER_AGENT_BYTES / (HOLDER_COST_BYTES + RECORD_COST_BYTES + PIECE_COST_BYTES));
    for (let i = 0; i < fit; i++) greedy.announce({ digest: testDigest(`b${i}`), size: 1, pieceSize: 1, complete: true });
    assert.throws(() => {
      greedy.announce({ digest: testDigest("one-more"), size: 1, pieceSize: 1, complete: true });
    }, code("ERR_TRACKER_RESOURCE_EXHAUSTED"));
    greedy.announce({ digest: testDigest("b0"), size: 1, pieceSize: 1, complete: false, bitmap: new Uint8Array(1) });
    greedy.withdraw(testDigest("b1"));
    greedy.announce({ digest: testDigest("one-more"), size: 1, pieceSize: 1, complete: true });
    tracker.register(testIdentity("asker"));
    assert.deepEqual(
      tracker.lookup("asker", testDigest("one-more"), false).holders.map((h) => h.agentId),
      ["greedy"],
    );
    assert.equal(await value(metrics.requestsRejected, { reason: "exhausted" }), 1);
  });

  it("charges a record with its piece hashes to the agent that created it, until the record goes", () => {
    const { tracker } = setup();
    const big = { size: MAX_PIECES_PER_BLOB, pieceSize: 1, complete: true };
    const fit = Math.floor(
      MEMORY_BUDGET_PER_AGENT_BYTES / (HOLDER_COST_BYTES + RECORD_COST_BYTES + MAX_PIECES_PER_BLOB * PIECE_COST_BYTES),
    );
    const a = tracker.register(testIdentity("a"));
    const b = tracker.register(testIdentity("b"));
    for (let i = 0; i < fit; i++) a.announce({ digest: testDigest(`big${i}`), ...big });
    assert.throws(() => {
      a.announce({ digest: testDigest("big-extra"), ...big });
    }, code("ERR_TRACKER_RESOURCE_EXHAUSTED"));
    // Joining records another agent created costs b only its holder entries.
    for (let i = 0; i < fit; i++) b.announce({ digest: testDigest(`big${i}`), ...big });
    b.announce({ digest: testDigest("big-extra"), ...big });
    // a withdraws one it created but b still holds: the record stays, and so does a's charge for it.
    a.withdraw(testDigest("big0"));
    assert.throws(() => {
      a.announce({ digest: testDigest("big-other"), ...big });
    }, code("ERR_TRACKER_RESOURCE_EXHAUSTED"));
    // Once b lets go as well, the record is gone and a's budget is back.
    b.withdraw(testDigest("big0"));
    a.announce({ digest: testDigest("big-other"), ...big });
  });

  it("one session over its budget has grown the tracker's heap by less than 64 MiB, whatever it announced", () => {
    setFlagsFromString("--expose-gc");
    const gc = runInNewContext("gc") as () => void;
    const hashes = (n: number) => Array.from({ length: n }, (_, index) => ({ index, sha256: pieceHash(index) }));
    for (const pieces of [1, 2048, MAX_PIECES_PER_BLOB]) {
      const { tracker } = setup();
      tracker.register(testIdentity("asker"));
      const rogue = tracker.register(testIdentity("rogue"));
      const pieceHashes = hashes(pieces);
      gc();
      const before = memoryUsage();
      let announced = 0;
      for (;;) {
        const digest = testDigest(`${pieces}-${announced}`);
        try {
          rogue.announce({ digest, size: pieces, pieceSize: 1, complete: true, pieceHashes });
        } catch (error: unknown) {
          assert.ok(code("ERR_TRACKER_RESOURCE_EXHAUSTED")(error));
          break;
        }
        tracker.lookup("asker", digest, false); // lookups build the shared hash list
        announced++;
      }
      gc();
      const after = memoryUsage();
      const grownMiB = (after.heapUsed + after.external - before.heapUsed - before.external) / 2 ** 20;
      assert.ok(announced > 0 && grownMiB < 64, `${announced} blobs of ${pieces} pieces grew the heap by ${grownMiB.toFixed(1)} MiB`);
      assert.equal(tracker.snapshot().blobs.length, announced);
    }
  });
});
