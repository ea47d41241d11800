import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { ControllerMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import { MAX_WATCHES_PER_AGENT, WATCH_TTL_MS } from "./blob-watchers.js";
import { MemoryTracker } from "./memory-tracker.js";
import type { TrackerSession } from "./tracker-session.js";
import { manualClock, testDigest, testIdentity } from "./testing/helpers.js";

const logger = pino({ level: "silent" });
const D = testDigest("notices");
const PIECE = 4;
const SIZE = 4 * PIECE;
const hash = (i: number): Uint8Array => new Uint8Array(32).fill(i + 1);

/** A MemoryTracker on a hand-moved clock with hand-run timers; each agent's notices are recorded. */
function setup(options: { noticeIntervalMs?: number } = {}) {
  const clock = manualClock();
  const metrics = new ControllerMetrics({ version: "test", collectDefaults: false });
  const tracker = new MemoryTracker({
    logger,
    metrics,
    now: clock.now,
    grantStallTimeoutMs: 60_000,
    ...(options.noticeIntervalMs === undefined ? {} : { noticeIntervalMs: options.noticeIntervalMs }),
    schedule: clock.schedule,
  });
  const notices = new Map<string, Digest[]>();
  const register = (agentId: string, takesNotices = true): TrackerSession => {
    notices.set(agentId, []);
    return tracker.register(testIdentity(agentId), {
      ...(takesNotices
        ? {
            onNotice: (digest: Digest) => {
              notices.get(agentId)?.push(digest);
              return true;
            },
          }
        : {}),
    });
  };
  return {
    tracker,
    metrics,
    register,
    notices: (agentId: string) => notices.get(agentId)?.length ?? 0,
    lookup: (agentId: string, digest: Digest = D, want = false) => tracker.lookup(agentId, digest, want),
    advance: clock.advance,
  };
}

/** An announce of pieces 0..held-1 of D, with their hashes. */
function partial(session: TrackerSession, held: number): void {
  const bitmap = new Uint8Array([(0xff00 >> held) & 0xf0]);
  session.announce({
    digest: D,
    size: SIZE,
    pieceSize: PIECE,
    complete: false,
    bitmap,
    pieceHashes: Array.from({ length: held }, (_, index) => ({ index, sha256: hash(index) })),
  });
}

function complete(session: TrackerSession): void {
  session.announce({
    digest: D,
    size: SIZE,
    pieceSize: PIECE,
    complete: true,
    pieceHashes: Array.from({ length: 4 }, (_, index) => ({ index, sha256: hash(index) })),
  });
}

describe("MemoryTracker notices", () => {
  it("an agent that looked a blob up hears of another agent's announce; the announcer and non-watchers do not", async () => {
    const t = setup();
    t.register("watcher");
    const grantee = t.register("grantee");
    t.register("bystander");
    t.register("old", false);
    assert.equal(t.lookup("grantee", D, true).origin.granted, true);
    t.lookup("watcher");
    t.lookup("old");
    partial(grantee, 1);
    assert.equal(t.notices("watcher"), 1);
    assert.equal(t.notices("grantee"), 0, "not told of its own announce (it looked the blob up too)");
    assert.equal(t.notices("bystander"), 0, "never looked it up");
    assert.equal(t.notices("old"), 0, "a session without notices watches nothing");
    assert.equal(await metricValue(t.metrics, "shoal_tracker_notices_sent_total"), 1);
    assert.equal(await metricValue(t.metrics, "shoal_tracker_blob_watches"), 2, "the grantee's and the watcher's");
  });

  it("tells of new holders, more pieces and complete copies, not of an announce that changes nothing", () => {
    const t = setup();
    t.register("w");
    const a = t.register("a");
    t.lookup("w");
    partial(a, 1);
    t.advance(200);
    partial(a, 1);
    t.advance(200);
    assert.equal(t.notices("w"), 1, "the same pieces again are no news");
    partial(a, 2);
    t.advance(200);
    complete(a);
    assert.equal(t.notices("w"), 3);
  });

  it("coalesces one blob's announces into at most one notice per interval", () => {
    const t = setup({ noticeIntervalMs: 100 });
    t.register("w");
    const a = t.register("a");
    const b = t.register("b");
    t.lookup("w");
    partial(a, 1);
    t.advance(10);
    partial(b, 1);
    t.advance(10);
    partial(a, 2);
    assert.equal(t.notices("w"), 1, "the first at once");
    t.advance(100);
    assert.equal(t.notices("w"), 2, "the rest at the end of the interval, as one");
  });

  it("a watch ends when the agent completes the blob, withdraws it, its session ends, or no lookup renews it", () => {
    const t = setup();
    const w = t.register("w");
    const a = t.register("a");
    t.lookup("w");
    complete(w);
    partial(a, 1);
    assert.equal(t.notices("w"), 0, "holds it complete: no news for it");
    t.lookup("w");
    partial(a, 2);
    assert.equal(t.notices("w"), 0, "a lookup of a blob it holds complete watches nothing");

    const v = t.register("v");
    t.lookup("v");
    v.withdraw(D);
    t.advance(200);
    partial(a, 3);
    assert.equal(t.notices("v"), 0, "withdrawn");

    t.register("u");
    t.lookup("u");
    t.tracker.disconnect("u");
    t.advance(200);
    complete(a);
    assert.equal(t.notices("u"), 0, "session ended");
    assert.equal(t.tracker.watchCount, 0);

    const s = t.register("s");
    t.lookup("s");
    t.advance(WATCH_TTL_MS);
    a.withdraw(D);
    partial(a, 1);
    assert.equal(t.notices("s"), 0, "expired");
    assert.ok(s.open);
  });

  it("tells the waiters when the origin grantee goes away, so one of them can take the grant", () => {
    const t = setup();
    t.register("w");
    const grantee = t.register("grantee");
    assert.equal(t.lookup("grantee", D, true).origin.granted, true);
    assert.equal(t.lookup("w", D, true).origin.granted, false);
    grantee.close();
    assert.equal(t.notices("w"), 1);
    assert.equal(t.lookup("w", D, true).origin.granted, true);
  });

  it("bounds one agent's watches however many blobs it looks up", () => {
    const t = setup();
    t.register("rogue");
    for (let i = 0; i < MAX_WATCHES_PER_AGENT * 4; i++) t.lookup("rogue", testDigest(`rogue-${i}`));
    assert.equal(t.tracker.watchCount, MAX_WATCHES_PER_AGENT);
  });
});

async function metricValue(metrics: ControllerMetrics, name: string): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name);
  assert.ok(metric, `${name} is registered`);
  const { values } = await metric.get();
  return values.reduce((sum, v) => sum + v.value, 0);
}
