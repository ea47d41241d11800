import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import { status } from "@grpc/grpc-js";
import { pino } from "pino";
import { digestOf } from "../oci/index.js";
import { choosePieceSize, pieceCount, pieceSpan, sha256Of } from "../piece/index.js";
import { FakeUpstream } from "../registry/testing/fake-upstream.js";
import { LocalTracker, MemoryTracker } from "../tracker/index.js";
import { eventually, PeerFixture, startFakePeer, testBytes } from "./testing/peer-fixture.js";
import { SwarmNode } from "./testing/swarm-node.js";

const NAME = "adversarial/app";
const FAST = { refreshIntervalMs: 100, announceIntervalMs: 50, stallMs: 1_000, relayWaitMs: 1_000 };

// Members that do not follow the protocol, or lie about what a blob is (its piece hashes, its size), cost an
// honest agent a bounded number of calls and at most one failed pull, never a wrong complete response.
describe("swarm: a member that claims a blob and never delivers it, or lies about it", () => {
  let origin: FakeUpstream;
  let fixture: PeerFixture;
  let nodes: SwarmNode[] = [];
  const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });

  before(async () => {
    origin = await FakeUpstream.start();
  });
  after(async () => {
    await origin.close();
  });
  afterEach(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    nodes = [];
    await fixture.close();
  });

  it("a liar and an origin that answers 404: the pull fails with the origin's error, not at its own deadline", async () => {
    fixture = new PeerFixture();
    const bytes = testBytes(3 * 1024 * 1024 + 11);
    const blob = await origin.addBlob(bytes);
    origin.script({ kind: "blob", reference: blob.digest }, { kind: "status", status: 404 });
    const tracker = new MemoryTracker({ logger, grantStallTimeoutMs: 1_000 });
    const liar = await startFakePeer(fixture, (call) => {
      call.fail(status.UNAVAILABLE, "not here");
    });
    const session = new LocalTracker({ tracker, identity: { agentId: "liar", nodeName: "liar", zone: "", peerAddress: liar }, logger });
    fixture.defer(() => session.close());
    session.announce({ digest: blob.digest, size: blob.size, pieceSize: choosePieceSize(blob.size), complete: true });
    const node = await SwarmNode.start({ name: "honest", tracker, origin: { host: origin.host, url: origin.url }, tuning: FAST });
    nodes = [node];
    // The pull started from the peer (its reader holds the partial), then the origin failed: the reader
    // must see that failure, not wait for pieces nobody fetches until its own deadline.
    const deadline = AbortSignal.timeout(60_000);
    await assert.rejects(node.pull(origin.host, NAME, blob.digest, deadline), (error: unknown) => {
      assert.equal(deadline.aborted, false, `failed only at the pull's deadline: ${String(error)}`);
      return true;
    });
  });

  for (const [refusal, code] of [
    ["NOT_FOUND", status.NOT_FOUND],
    ["FAILED_PRECONDITION", status.FAILED_PRECONDITION],
    ["UNAVAILABLE", status.UNAVAILABLE],
  ] as const) {
    it(`answers every piece with ${refusal}: a bounded number of calls, then the origin (once)`, async () => {
      fixture = new PeerFixture();
      const bytes = testBytes(6 * 1024 * 1024 + 7);
      const blob = await origin.addBlob(bytes);
      const tracker = new MemoryTracker({ logger, grantStallTimeoutMs: 1_000 });
      let calls = 0;
      const liar = await startFakePeer(fixture, (call) => {
        calls++;
        call.fail(code, "not here");
      });
      // The liar announces the blob complete, with the right piece hashes: only delivering gives it away.
      const session = new LocalTracker({ tracker, identity: { agentId: "liar", nodeName: "liar", zone: "", peerAddress: liar }, logger });
      fixture.defer(() => session.close());
      const pieceSize = choosePieceSize(blob.size);
      const pieceHashes = Array.from({ length: pieceCount(blob.size, pieceSize) }, (_, index) => {
        const span = pieceSpan(index, blob.size, pieceSize);
        return { index, sha256: sha256Of(bytes.subarray(span.start, span.end)) };
      });
      session.announce({ digest: blob.digest, size: blob.size, pieceSize, complete: true, pieceHashes });
      const node = await SwarmNode.start({ name: "honest", tracker, origin: { host: origin.host, url: origin.url }, tuning: FAST });
      nodes = [node];
      const served = origin.blobBytesServed;
      const result = await node.pull(origin.host, NAME, blob.digest, AbortSignal.timeout(30_000));
      assert.equal(digestOf(result.bytes), blob.digest);
      assert.equal(origin.blobBytesServed - served, blob.size, "the origin sent the blob once");
      assert.ok(calls <= 12, `the liar got ${calls} calls`);
    });
  }

  /** A peer that serves `served` for the blob, whatever the blob really is: consistent with its own hashes. */
  async function forger(served: Buffer, pieceSize: number): Promise<{ address: string; calls: () => number }> {
    let calls = 0;
    const address = await startFakePeer(fixture, (call) => {
      calls++;
      for (const index of call.request.pieces) {
        const span = pieceSpan(index, served.length, pieceSize);
        call.send(index, 0, served.subarray(span.start, span.end));
      }
      call.end();
    });
    return { address, calls: () => calls };
  }

  function hashesOf(bytes: Buffer, pieceSize: number): { index: number; sha256: Uint8Array }[] {
    return Array.from({ length: pieceCount(bytes.length, pieceSize) }, (_, index) => {
      const span = pieceSpan(index, bytes.length, pieceSize);
      return { index, sha256: sha256Of(bytes.subarray(span.start, span.end)) };
    });
  }

  it("garbage announced first with its own hashes: one pull fails its digest (never complete), the next comes from the origin, the next node from that one, and the forger is excluded", async () => {
    fixture = new PeerFixture();
    const bytes = testBytes(3 * 1024 * 1024 + 5);
    const blob = await origin.addBlob(bytes);
    const pieceSize = choosePieceSize(blob.size);
    const garbage = Buffer.from(bytes.map((b) => b ^ 0x5a));
    const tracker = new MemoryTracker({ logger, grantStallTimeoutMs: 1_000 });
    const rogue = await forger(garbage, pieceSize);
    const session = new LocalTracker({
      tracker,
      identity: { agentId: "rogue", nodeName: "rogue", zone: "", peerAddress: rogue.address },
      logger,
    });
    fixture.defer(() => session.close());
    session.announce({ digest: blob.digest, size: blob.size, pieceSize, complete: true, pieceHashes: hashesOf(garbage, pieceSize) });
    const a = await SwarmNode.start({ name: "a", tracker, origin: { host: origin.host, url: origin.url }, tuning: FAST });
    const b = await SwarmNode.start({ name: "b", tracker, origin: { host: origin.host, url: origin.url }, tuning: FAST });
    nodes = [a, b];
    const served = origin.blobBytesServed;
    // Every piece matches the forger's hashes; the digest does not: the reader fails, it never sees the end.
    await assert.rejects(a.pull(origin.host, NAME, blob.digest, AbortSignal.timeout(30_000)), /digest|hashes to/i);
    assert.ok(rogue.calls() > 0, "the first pull took the forger's pieces");
    assert.equal(await a.metric("shoal_digest_mismatches_total", { source: "peer" }), 1);
    const callsBefore = rogue.calls();
    const again = await a.pull(origin.host, NAME, blob.digest, AbortSignal.timeout(30_000));
    assert.equal(digestOf(again.bytes), blob.digest);
    assert.equal(rogue.calls(), callsBefore, "the forger is not asked again for this blob");
    assert.equal(origin.blobBytesServed - served, blob.size, "the origin sent the blob once");
    assert.ok(await eventually(() => tracker.holdsComplete(a.agentId, blob.digest), 5_000));
    const fromA = await b.pull(origin.host, NAME, blob.digest, AbortSignal.timeout(30_000));
    assert.equal(digestOf(fromA.bytes), blob.digest);
    assert.equal(fromA.source, "peer");
    assert.equal(rogue.calls(), callsBefore, "the second node never asked the forger: the origin grantee's claim is preferred");
    assert.equal(origin.blobBytesServed - served, blob.size, "still once");
    assert.ok(await eventually(() => tracker.holdsComplete(b.agentId, blob.digest), 5_000));
    assert.equal(tracker.holdsComplete("rogue", blob.digest), false, "two nodes' verified copies contradict it: excluded");
    // Refused by the tracker (the in-process session logs it, as a gRPC one would): it stays excluded.
    session.announce({ digest: blob.digest, size: blob.size, pieceSize, complete: true, pieceHashes: hashesOf(garbage, pieceSize) });
    assert.equal(tracker.holdsComplete("rogue", blob.digest), false);
  });

  it("a wrong size announced first: a node that knows the size from the manifest never uses it", async () => {
    fixture = new PeerFixture();
    const bytes = testBytes(2 * 1024 * 1024 + 9);
    const blob = await origin.addBlob(bytes);
    const pieceSize = choosePieceSize(blob.size + 4096);
    const garbage = testBytes(blob.size + 4096).map((x) => x ^ 0xa5);
    const tracker = new MemoryTracker({ logger, grantStallTimeoutMs: 1_000 });
    const rogue = await forger(Buffer.from(garbage), pieceSize);
    const session = new LocalTracker({
      tracker,
      identity: { agentId: "rogue", nodeName: "rogue", zone: "", peerAddress: rogue.address },
      logger,
    });
    fixture.defer(() => session.close());
    session.announce({
      digest: blob.digest,
      size: blob.size + 4096,
      pieceSize,
      complete: true,
      pieceHashes: hashesOf(Buffer.from(garbage), pieceSize),
    });
    const a = await SwarmNode.start({ name: "a", tracker, origin: { host: origin.host, url: origin.url }, tuning: FAST });
    const b = await SwarmNode.start({ name: "b", tracker, origin: { host: origin.host, url: origin.url }, tuning: FAST });
    nodes = [a, b];
    const served = origin.blobBytesServed;
    const first = await a.pull(origin.host, NAME, blob.digest, AbortSignal.timeout(30_000), blob.size);
    assert.equal(digestOf(first.bytes), blob.digest);
    assert.equal(first.source, "origin");
    assert.ok(await eventually(() => tracker.holdsComplete(a.agentId, blob.digest), 5_000));
    const second = await b.pull(origin.host, NAME, blob.digest, AbortSignal.timeout(30_000), blob.size);
    assert.equal(digestOf(second.bytes), blob.digest);
    assert.equal(second.source, "peer");
    assert.equal(rogue.calls(), 0, "nobody asked the member with the wrong size");
    assert.equal(origin.blobBytesServed - served, blob.size);
  });
});
