import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DATA_GAP_HALF_LIFE_MS, MAX_DATA_GAP_PATIENCE_MS, RequestBook } from "./request-book.js";
import { type SwarmPeer, SwarmPeers } from "./swarm-peers.js";

const STALL_MS = 3_000;

/** A peer as the download knows it, first seen (grown) at `grewAtMs`. */
function peer(agentId: string, grewAtMs: number): SwarmPeer {
  const peers = new SwarmPeers(8);
  peers.update(
    [{ agentId, peerAddress: `${agentId}:1`, nodeName: agentId, zone: "", complete: true, bitmap: new Uint8Array(0), activeUploads: 0 }],
    grewAtMs,
  );
  const [known] = peers.all();
  assert.ok(known !== undefined);
  return known;
}

describe("RequestBook.moving", () => {
  it("holds while a request is fresh or its call received bytes lately, not after", () => {
    const book = new RequestBook();
    assert.equal(book.moving(0, STALL_MS), false, "nothing in flight");
    const request = book.add(peer("a", 0), [0, 1], false, 1_000);
    assert.equal(book.moving(1_000 + STALL_MS - 1, STALL_MS), true, "a fresh request");
    assert.equal(book.moving(1_000 + STALL_MS, STALL_MS), false, "a request silent for stallMs");
    book.data(request, 100, 5_000);
    assert.equal(book.moving(5_000 + STALL_MS - 1, STALL_MS), true, "bytes within stallMs");
    assert.equal(book.moving(5_000 + STALL_MS, STALL_MS), false);
  });

  it("counts a relay as moving only while its peer keeps gaining pieces", () => {
    const book = new RequestBook();
    const relaying = peer("b", 0);
    book.add(relaying, [3], true, 10_000);
    assert.equal(book.moving(10_000, STALL_MS), false, "a fresh relay from a peer that stopped growing");
    relaying.grewAtMs = 9_000;
    assert.equal(book.moving(10_000, STALL_MS), true);
  });
});

describe("RequestBook.patienceMs", () => {
  it("stretches a silence threshold by the pauses inside calls, decays them, ignores relays and first bytes, and is capped", () => {
    const book = new RequestBook();
    assert.equal(book.patienceMs(500, 0), 500, "no pauses seen: the base");
    const call = book.add(peer("a", 0), [0, 1], false, 0);
    book.data(call, 100, 2_000);
    assert.equal(book.patienceMs(500, 2_000), 500, "the wait for a call's first bytes is not a pause inside it");
    book.data(call, 100, 2_100);
    assert.equal(book.patienceMs(500, 2_100), 500, "a 100 ms pause: 3 × 100 ms is below the base");
    book.data(call, 100, 2_900);
    assert.equal(book.patienceMs(500, 2_900), 3 * 800, "an 800 ms pause: three times that");
    assert.equal(book.patienceMs(3_000, 2_900), 3_000, "never below the base");
    assert.equal(book.patienceMs(500, 2_900 + DATA_GAP_HALF_LIFE_MS), 3 * 400, "half as much a half-life later");
    book.data(call, 100, 2_900 + 5_000);
    assert.equal(book.patienceMs(500, 7_900), MAX_DATA_GAP_PATIENCE_MS, "a 5 s pause: capped");
    const relays = new RequestBook();
    const relay = relays.add(peer("b", 0), [3], true, 0);
    relays.data(relay, 100, 1_000);
    relays.data(relay, 100, 3_000);
    assert.equal(relays.patienceMs(500, 3_000), 500, "a relay's pauses are its peer waiting for the piece");
  });
});
