import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RequestBook } from "./request-book.js";
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
