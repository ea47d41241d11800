import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import { status } from "@grpc/grpc-js";
import { pino } from "pino";
import { digestOf } from "../oci/index.js";
import { choosePieceSize, pieceCount, pieceSpan, sha256Of } from "../piece/index.js";
import { FakeUpstream } from "../registry/testing/fake-upstream.js";
import { LocalTracker, MemoryTracker } from "../tracker/index.js";
import { PeerFixture, startFakePeer, testBytes } from "./testing/peer-fixture.js";
import { SwarmNode } from "./testing/swarm-node.js";

const NAME = "adversarial/app";
const FAST = { refreshIntervalMs: 100, announceIntervalMs: 50, stallMs: 1_000, relayWaitMs: 1_000 };

// Members that do not follow the protocol cost an honest agent a bounded number of calls, never its pull.
describe("swarm: a member that claims a blob and never delivers it", () => {
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
});
