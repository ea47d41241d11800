import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { ControllerMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import { MemoryTracker } from "./memory-tracker.js";
import type { TrackerSession } from "./tracker-session.js";
import { MAX_NOTICE_DELTA_BYTES } from "./notice-delta.js";
import { bitmapOf, manualClock, pieceHash, testDigest, testIdentity } from "./testing/helpers.js";
import type { BlobChange, LookupResult } from "./tracker.js";

const logger = pino({ level: "silent" });
const D = testDigest("deltas");
const PIECES = 8;
const PIECE = 4;
const SIZE = PIECES * PIECE;

/** A MemoryTracker on a hand-moved clock with hand-run timers; every notice (digest, change) is recorded per agent. */
function setup(options: { maxLookupHolders?: number; noticeDeltas?: boolean; refuse?: (agentId: string) => boolean } = {}) {
  const clock = manualClock();
  const metrics = new ControllerMetrics({ version: "test", collectDefaults: false });
  const tracker = new MemoryTracker({
    logger,
    metrics,
    now: clock.now,
    grantStallTimeoutMs: 60_000,
    ...(options.maxLookupHolders === undefined ? {} : { maxLookupHolders: options.maxLookupHolders }),
    ...(options.noticeDeltas === undefined ? {} : { noticeDeltas: options.noticeDeltas }),
    schedule: clock.schedule,
  });
  const notices = new Map<string, { digest: Digest; change: BlobChange | undefined }[]>();
  const register = (agentId: string): TrackerSession => {
    notices.set(agentId, []);
    return tracker.register(testIdentity(agentId), {
      onNotice: (digest, change) => {
        if (options.refuse?.(agentId) === true) return false;
        notices.get(agentId)?.push({ digest, change });
        return true;
      },
    });
  };
  return {
    tracker,
    metrics,
    register,
    notices: (agentId: string) => notices.get(agentId) ?? [],
    last: (agentId: string) => notices.get(agentId)?.at(-1),
    /** Moves the clock past the notice interval, running the rounds due. */
    advance(ms = 100) {
      clock.advance(ms);
    },
  };
}

function announce(session: TrackerSession, held: readonly number[], digest = D, pieces = PIECES): void {
  session.announce({
    digest,
    size: pieces * PIECE,
    pieceSize: PIECE,
    complete: false,
    bitmap: bitmapOf(pieces, held),
    pieceHashes: held.map((index) => ({ index, sha256: pieceHash(index) })),
  });
}

/** What an agent knows after its lookup and the changes since, merged the way SwarmDownload merges them. */
class Knowledge {
  readonly holders = new Map<string, { complete: boolean; bitmap: string; zone: string; peerAddress: string }>();
  readonly hashes: (string | undefined)[];
  grantee: string | undefined;

  constructor(first: LookupResult) {
    this.hashes = first.pieceHashes.map((h) => (h === undefined ? undefined : Buffer.from(h).toString("hex")));
    for (const h of first.holders) this.holders.set(h.agentId, describe_(h));
    this.grantee = first.origin.granteeAgentId;
  }

  apply(change: BlobChange): void {
    for (const h of change.holders) this.holders.set(h.agentId, describe_(h));
    Array.from(change.hashes.indices).forEach((index, i) => {
      this.hashes[index] ??= Buffer.from(change.hashes.bytes.subarray(i * 32, (i + 1) * 32)).toString("hex");
    });
    this.grantee = change.granteeAgentId;
  }

  /** Asserts it is what a lookup answers now (holders as a set: a lookup's order is random among ties). */
  matches(answer: LookupResult): void {
    const fresh = new Knowledge(answer);
    assert.deepEqual(new Map([...this.holders].sort()), new Map([...fresh.holders].sort()));
    assert.deepEqual(this.hashes, fresh.hashes);
    assert.equal(this.grantee, fresh.grantee);
  }
}

function describe_(h: { complete: boolean; bitmap: Uint8Array; zone: string; peerAddress: string }) {
  return { complete: h.complete, bitmap: Buffer.from(h.bitmap).toString("hex"), zone: h.zone, peerAddress: h.peerAddress };
}

async function counter(metrics: ControllerMetrics, name: string): Promise<number> {
  return (await metrics.registry.getSingleMetric(name)?.get())?.values[0]?.value ?? 0;
}

describe("BlobChanged notices that carry the change", () => {
  it("carry the changed holder, the hashes accepted since and the grantee: merged, they are what a lookup answers", async () => {
    const h = setup();
    const fetcher = h.register("fetcher");
    h.register("watcher");
    const other = h.register("other");
    assert.equal(h.tracker.lookup("fetcher", D, true).origin.granted, true);
    h.tracker.lookup("watcher", D, false);
    announce(fetcher, [0]);
    assert.equal(h.last("watcher")?.change, undefined, "its lookup found no claim yet: it looks the blob up (geometry and all)");
    const knows = new Knowledge(h.tracker.lookup("watcher", D, false));
    h.advance();
    announce(fetcher, [0, 1]);
    const first = h.last("watcher")?.change;
    assert.ok(first, "the first change since the lookup is told at once, with its content");
    assert.deepEqual(
      first.holders.map((x) => x.agentId),
      ["fetcher"],
    );
    assert.deepEqual(Array.from(first.hashes.indices), [1]);
    assert.equal(first.granteeAgentId, "fetcher");
    assert.equal(first.size, SIZE);
    knows.apply(first);
    knows.matches(h.tracker.lookup("other", D, false));
    // Two announcers within one interval: one round, both holders, only the hashes new since the last one.
    const told = h.notices("watcher").length;
    announce(fetcher, [0, 1, 2, 3]);
    announce(other, [0]);
    assert.equal(h.notices("watcher").length, told, "coalesced until the interval ends");
    h.advance();
    const second = h.last("watcher")?.change;
    assert.ok(second);
    assert.deepEqual(second.holders.map((x) => x.agentId).sort(), ["fetcher", "other"]);
    assert.deepEqual(Array.from(second.hashes.indices), [2, 3]);
    knows.apply(second);
    // The watcher's own knowledge is what its own lookup answers (not another agent's: a lookup never lists the asker).
    knows.matches(h.tracker.lookup("watcher", D, false));
    // The grant's release is told too, with no grantee.
    h.advance();
    fetcher.withdraw(D);
    const released = h.last("watcher")?.change;
    assert.ok(released);
    assert.equal(released.granteeAgentId, undefined);
    const carried = [...h.notices("watcher"), ...h.notices("other"), ...h.notices("fetcher")].filter((n) => n.change !== undefined).length;
    assert.equal(await counter(h.metrics, "shoal_tracker_notice_deltas_total"), carried);
  });

  it("say only 'look it up' when the watcher's answer was a sample of a crowd", () => {
    const h = setup({ maxLookupHolders: 2 });
    const holders = ["a", "b", "c"].map((id) => h.register(id));
    h.register("watcher");
    holders.forEach((s) => {
      announce(s, [0]);
    });
    assert.equal(h.tracker.lookup("watcher", D, false).holders.length, 2, "crowded: the answer is full");
    h.advance();
    announce(holders[0] ?? assert.fail(), [0, 1]);
    const notice = h.last("watcher");
    assert.equal(notice?.digest, D);
    assert.equal(notice.change, undefined);
  });

  it("say 'look it up' once the holders no longer fit in one answer, though they did at the lookup", () => {
    const h = setup({ maxLookupHolders: 2 });
    const a = h.register("a");
    const b = h.register("b");
    h.register("watcher");
    announce(a, [0]);
    assert.equal(h.tracker.lookup("watcher", D, false).holders.length, 1);
    announce(b, [0]);
    assert.equal(h.last("watcher")?.change, undefined, "a lookup now would sample");
  });

  it("say 'look it up' when the change is larger than a notice may be", () => {
    const pieces = Math.ceil(MAX_NOTICE_DELTA_BYTES / 36) + 8;
    const big = testDigest("big");
    const h = setup();
    const a = h.register("a");
    h.register("watcher");
    announce(a, [0], big, pieces);
    h.tracker.lookup("watcher", big, false);
    h.advance();
    announce(
      a,
      Array.from({ length: pieces - 1 }, (_, i) => i),
      big,
      pieces,
    );
    assert.equal(h.last("watcher")?.digest, big);
    assert.equal(h.last("watcher")?.change, undefined);
    // A small change after the watcher looked up again is carried again.
    h.tracker.lookup("watcher", big, false);
    h.advance();
    announce(
      a,
      Array.from({ length: pieces }, (_, i) => i),
      big,
      pieces,
    );
    assert.deepEqual(Array.from(h.last("watcher")?.change?.hashes.indices ?? []), [pieces - 1]);
  });

  it("say 'look it up' when a lookup would now answer with another claim about the blob", () => {
    const h = setup();
    const a = h.register("a");
    const b = h.register("b");
    const c = h.register("c");
    h.register("watcher");
    announce(a, [0]);
    h.tracker.lookup("watcher", D, false);
    // Two nodes' complete copies of another size: a corroborated claim, which lookups now answer with.
    for (const s of [b, c]) s.announce({ digest: D, size: SIZE + 1, pieceSize: PIECE, complete: true });
    h.advance();
    assert.equal(h.tracker.lookup("a", D, false).size, SIZE + 1, "the other claim is the one answered with");
    const notices = h.notices("watcher");
    assert.ok(notices.length >= 1);
    assert.ok(
      notices.every((n) => n.change === undefined),
      "no change of the claim the watcher was answered with",
    );
  });

  it("after a dropped notice say 'look it up' until the watcher's next lookup", () => {
    let refuse = true;
    const h = setup({ refuse: () => refuse });
    const a = h.register("a");
    h.register("watcher");
    announce(a, [0]);
    h.tracker.lookup("watcher", D, false);
    h.advance();
    announce(a, [0, 1]);
    assert.equal(h.notices("watcher").length, 0, "dropped (the stream was not draining)");
    refuse = false;
    h.advance();
    announce(a, [0, 1, 2]);
    assert.equal(h.last("watcher")?.change, undefined, "it missed a change: only a lookup tells it all");
    h.tracker.lookup("watcher", D, false);
    h.advance();
    announce(a, [0, 1, 2, 3]);
    assert.deepEqual(Array.from(h.last("watcher")?.change?.hashes.indices ?? []), [3]);
  });

  it("with deltas off, every notice says 'look it up' (a tracker before deltas)", () => {
    const h = setup({ noticeDeltas: false });
    const a = h.register("a");
    h.register("watcher");
    h.tracker.lookup("watcher", D, false);
    announce(a, [0]);
    assert.equal(h.last("watcher")?.digest, D);
    assert.equal(h.last("watcher")?.change, undefined);
  });
});
