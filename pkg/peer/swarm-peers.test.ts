import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { HolderInfo } from "../tracker/index.js";
import { BUSY_BACKOFF_MS, FAILURE_BACKOFF_MS, SwarmPeers } from "./swarm-peers.js";

const PATIENCE_MS = 1_500;

function holder(agentId: string, zone: string): HolderInfo {
  return { agentId, peerAddress: `${agentId}:1`, nodeName: agentId, zone, complete: true, bitmap: new Uint8Array(0), activeUploads: 0 };
}

function ids(peers: readonly { agentId: string }[]): string[] {
  return peers.map((p) => p.agentId);
}

describe("SwarmPeers: busy peers", () => {
  it("a busy peer is asked for nothing for BUSY_BACKOFF_MS but stays a holder; a failed one is neither", () => {
    const peers = new SwarmPeers(8, "a");
    peers.update([holder("busy", "a"), holder("failed", "a")], 0);
    const [busy, failed] = peers.all();
    assert.ok(busy && failed);
    peers.busy(busy, 1_000);
    peers.failed(failed, 1_000);
    assert.deepEqual(ids(peers.usable(1_100)), []);
    assert.deepEqual(ids(peers.busyNow(1_100, PATIENCE_MS)), ["busy"]);
    assert.deepEqual(ids(peers.usable(1_000 + BUSY_BACKOFF_MS)), ["busy"], "asked again after the backoff");
    assert.deepEqual(ids(peers.busyNow(1_000 + BUSY_BACKOFF_MS, PATIENCE_MS)), []);
    assert.deepEqual(ids(peers.usable(1_000 + FAILURE_BACKOFF_MS)), ["busy", "failed"]);
  });

  it("a run of refusals longer than the patience, with no byte from the peer, stops counting it as a holder", () => {
    const peers = new SwarmPeers(8, "a");
    peers.update([holder("full", "a")], 0);
    const [full] = peers.all();
    assert.ok(full);
    // Refused again each time its backoff ends: one run of refusals from t = 1,000 ms.
    let nowMs = 1_000;
    for (; nowMs < 1_000 + PATIENCE_MS; nowMs += BUSY_BACKOFF_MS) {
      peers.busy(full, nowMs);
      assert.deepEqual(ids(peers.busyNow(nowMs + 1, PATIENCE_MS)), ["full"], `still waited for at ${nowMs} ms`);
    }
    peers.busy(full, nowMs);
    assert.deepEqual(ids(peers.busyNow(nowMs + 1, PATIENCE_MS)), [], "refusing for longer than the patience");
    // Bytes from it on another call: alive and serving this agent, just full; waited for again.
    full.dataAtMs = nowMs;
    assert.deepEqual(ids(peers.busyNow(nowMs + 1, PATIENCE_MS)), ["full"]);
  });

  it("a refusal long after the last backoff ended starts a new run", () => {
    const peers = new SwarmPeers(8, "a");
    peers.update([holder("p", "a")], 0);
    const [p] = peers.all();
    assert.ok(p);
    peers.busy(p, 1_000);
    peers.busy(p, 10_000);
    assert.equal(p.busySinceMs, 10_000);
    assert.deepEqual(ids(peers.busyNow(10_000 + PATIENCE_MS - 1, PATIENCE_MS)), [], "its backoff ended");
    peers.busy(p, 10_000 + BUSY_BACKOFF_MS);
    assert.equal(p.busySinceMs, 10_000, "a refusal right after the backoff continues the run");
  });
});

describe("SwarmPeers: a notice's change merged", () => {
  const partial = (agentId: string, zone: string, held: number[], activeUploads = 0): HolderInfo => {
    const bitmap = new Uint8Array(1);
    for (const i of held) bitmap[0] = (bitmap[0] ?? 0) | (0x80 >> i);
    return { ...holder(agentId, zone), complete: false, bitmap, activeUploads };
  };

  it("updates and adds the changed holders, keeps the others, and ranks all as the tracker would", () => {
    const peers = new SwarmPeers(8, "a");
    peers.update([holder("seed", "a"), partial("old", "a", [0])], 0);
    const random = (): number => 0.5;
    peers.merge([partial("old", "a", [0, 1, 2], 3), partial("new", "a", [0]), holder("far", "b")], 100, random);
    assert.deepEqual(ids(peers.all()).sort(), ["far", "new", "old", "seed"], "nobody dropped; the new ones added");
    const old = peers.all().find((p) => p.agentId === "old");
    assert.equal(old?.bitmap?.count, 3);
    assert.equal(old.grewAtMs, 100, "seen growing");
    // Same zone first, complete before partial, then the least loaded ("new" has no uploads, "old" has 3).
    assert.deepEqual(ids(peers.usable(100)), ["seed", "new", "old", "far"]);
  });

  it("activityAtMs: a holder gaining pieces, a new one that holds some, or bytes from a peer; not a repeat or an empty newcomer", () => {
    const peers = new SwarmPeers(8, "a");
    assert.equal(peers.activityAtMs(), Number.NEGATIVE_INFINITY, "nothing known yet");
    peers.update([partial("empty", "a", [])], 10);
    assert.equal(peers.activityAtMs(), Number.NEGATIVE_INFINITY, "a holder with no piece is no progress");
    peers.update([partial("empty", "a", []), partial("grantee", "a", [0])], 20);
    assert.equal(peers.activityAtMs(), 20, "a newcomer holding a piece");
    peers.merge([partial("grantee", "a", [0])], 30, Math.random);
    assert.equal(peers.activityAtMs(), 20, "the same bitmap again is no progress");
    peers.merge([partial("grantee", "a", [0, 1])], 40, Math.random);
    assert.equal(peers.activityAtMs(), 40, "a holder that grew");
    const empty = peers.all().find((p) => p.agentId === "empty");
    assert.ok(empty);
    empty.dataAtMs = 55;
    assert.equal(peers.activityAtMs(), 55, "bytes received from a peer");
    peers.update([partial("grantee", "a", [0, 1]), holder("seed", "a")], 60);
    assert.equal(peers.activityAtMs(), 60, "a complete newcomer");
  });

  it("a lookup after merges prunes what it no longer lists", () => {
    const peers = new SwarmPeers(8, "");
    peers.update([holder("a", "")], 0);
    peers.merge([holder("b", "")], 10, Math.random);
    peers.update([holder("b", "")], 20);
    assert.deepEqual(ids(peers.all()), ["b"]);
  });
});
