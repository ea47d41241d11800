import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import { pino } from "pino";
import { digestOf } from "../oci/index.js";
import { FakeUpstream } from "../registry/testing/fake-upstream.js";
import { MemoryTracker, TrackerError, type Tracker } from "../tracker/index.js";
import { corruptingStore } from "./testing/corrupting-store.js";
import { MiB, putBlob, testBytes } from "./testing/peer-fixture.js";
import { SwarmNode } from "./testing/swarm-node.js";

const NAME = "swarm/app";
const FAST = { refreshIntervalMs: 100, announceIntervalMs: 50, stallMs: 1_000, relayWaitMs: 1_000 };

describe("swarm: many agents, one origin fetch", () => {
  let origin: FakeUpstream;
  let tracker: MemoryTracker;
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
    origin.clearScripts();
  });

  async function startNodes(count: number, extra: Partial<Parameters<typeof SwarmNode.start>[0]>[] = []): Promise<SwarmNode[]> {
    tracker = new MemoryTracker({ logger, grantStallTimeoutMs: 1_000 });
    nodes = await Promise.all(
      Array.from({ length: count }, (_, i) =>
        SwarmNode.start({ name: `node-${i}`, tracker, origin: { host: origin.host, url: origin.url }, tuning: FAST, ...extra[i] }),
      ),
    );
    return nodes;
  }

  it("simultaneous cold pulls on 6 agents: every copy correct, the origin sends the blob once", async () => {
    const blob = await origin.addBlob({ size: 24 * 1024 * 1024 + 123, seed: "swarm-cold" });
    // A slow origin, so most agents have to take their pieces from the grantee while they arrive.
    origin.script({ kind: "blob", reference: blob.digest }, { kind: "body", bytesPerSecond: 24 * 1024 * 1024 });
    await startNodes(6);
    const results = await Promise.all(nodes.map((n) => n.pull(origin.host, NAME, blob.digest)));
    for (const r of results) assert.equal(digestOf(r.bytes), blob.digest);
    assert.equal(origin.blobBytesServed, blob.size, "exactly one copy left the origin");
    assert.equal(results.filter((r) => r.source === "origin").length, 1, "one grantee");
    const peerBytes = (await Promise.all(nodes.map((n) => n.metric("shoal_peer_bytes_received_total")))).reduce((a, b) => a + b, 0);
    assert.ok(peerBytes >= 5 * blob.size, `the other five got theirs from peers (${peerBytes} bytes)`);
  });

  it("a peer serving corrupted pieces is detected and dropped; every copy is still correct", async () => {
    const blob = await origin.addBlob({ size: 8 * 1024 * 1024, seed: "swarm-corrupt" });
    await startNodes(4, [{ servedStore: corruptingStore }]);
    const [bad, ...rest] = nodes;
    assert.ok(bad);
    assert.equal(digestOf((await bad.pull(origin.host, NAME, blob.digest)).bytes), blob.digest);
    await bad.inventory.idle();
    const served = origin.blobBytesServed;
    const results = await Promise.all(rest.map((n) => n.pull(origin.host, NAME, blob.digest)));
    for (const r of results) assert.equal(digestOf(r.bytes), blob.digest);
    const failures = (await Promise.all(rest.map((n) => n.metric("shoal_piece_verification_failures_total")))).reduce((a, b) => a + b, 0);
    assert.ok(failures >= 1, "bad pieces were detected");
    // The agents name the bad holder in their lookups, so the tracker grants the origin to one of them and
    // the others take pieces from it: the origin sends the blob once more, not once per agent.
    assert.ok(
      origin.blobBytesServed - served <= blob.size,
      `the origin sent ${origin.blobBytesServed - served} bytes for a ${blob.size}-byte blob`,
    );
    for (const node of rest) {
      const bad = await node.metric("shoal_piece_verification_failures_total");
      assert.ok(bad <= 4, `the bad peer was dropped after its first bad pieces (${node.name} verified ${bad} bad pieces)`);
    }
  });

  it("a peer killed mid-transfer: the others finish from other sources", async () => {
    const blob = await origin.addBlob({ size: 16 * 1024 * 1024, seed: "swarm-kill-peer" });
    await startNodes(4, [{ uploadBytesPerSecond: 4 * 1024 * 1024 }]);
    const [seed, ...rest] = nodes;
    assert.ok(seed);
    await seed.pull(origin.host, NAME, blob.digest);
    await seed.inventory.idle();
    const pulls = rest.map((n) => n.pull(origin.host, NAME, blob.digest));
    await new Promise((resolve) => setTimeout(resolve, 500));
    await seed.stop();
    for (const r of await Promise.all(pulls)) assert.equal(digestOf(r.bytes), blob.digest);
  });

  /**
   * Four agents pull a 16 MiB blob the origin sends at 8 MiB/s; the first one (the grantee) is stopped
   * 0.8 s in. Every other pull must finish, and another agent must have taken over the origin fetch.
   */
  async function killGranteeMidTransfer(seed: string, extra: Partial<Parameters<typeof SwarmNode.start>[0]> = {}): Promise<void> {
    const blob = await origin.addBlob({ size: 16 * 1024 * 1024, seed });
    origin.script({ kind: "blob", reference: blob.digest }, { kind: "body", bytesPerSecond: 8 * 1024 * 1024 });
    await startNodes(4, [extra, extra, extra, extra]);
    const [grantee, ...rest] = nodes;
    assert.ok(grantee);
    const granteePull = grantee.pull(origin.host, NAME, blob.digest).catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const pulls = rest.map((n) => n.pull(origin.host, NAME, blob.digest));
    await new Promise((resolve) => setTimeout(resolve, 500));
    await grantee.stop();
    await granteePull;
    for (const r of await Promise.all(pulls)) assert.equal(digestOf(r.bytes), blob.digest);
    assert.ok(
      origin.requests.filter((r) => r.kind === "blob" && r.reference === blob.digest).length >= 2,
      "another agent took over the origin fetch",
    );
  }

  it("the origin grantee killed mid-transfer: the grant moves and every pull finishes", async () => {
    await killGranteeMidTransfer("swarm-kill-grantee");
  });

  it(
    "the origin grantee killed and no peer holding the rest: another agent takes the grant over without waiting out its stall timer",
    { timeout: 30_000 },
    async () => {
      // A stall timer far beyond the test's timeout: only noticing that nobody can bring the rest finishes it.
      await killGranteeMidTransfer("swarm-orphaned", { tuning: { ...FAST, stallMs: 600_000 } });
    },
  );

  it("without a reachable tracker an agent fetches from the origin", async () => {
    const blob = await origin.addBlob({ size: 2 * 1024 * 1024, seed: "swarm-no-tracker" });
    const down: Tracker = {
      lookup: () => Promise.reject(new TrackerError("ERR_TRACKER_UNAVAILABLE", "down")),
      resolveTag: () => Promise.reject(new TrackerError("ERR_TRACKER_UNAVAILABLE", "down")),
      publishTag: () => undefined,
      announce: () => undefined,
      withdraw: () => undefined,
      setActiveUploads: () => undefined,
      watchBlob: () => () => undefined,
      sendsNotices: false,
      connected: false,
      close: () => Promise.resolve(),
    };
    await startNodes(1, [{ trackerOverride: down }]);
    const r = await nodes[0]!.pull(origin.host, NAME, blob.digest);
    assert.equal(digestOf(r.bytes), blob.digest);
    assert.equal(r.source, "origin");
    assert.equal(await nodes[0]!.metric("shoal_tracker_lookups_total", { result: "unavailable" }), 1);
  });
  // On a busy machine an agent itself may not run for seconds. Its peers' bytes then wait in its sockets, and
  // when it runs again its timers come before its sockets are read: a download that judged the silence by the
  // clock alone took its own pause for a silent peer, ended its round and cancelled its calls.
  for (const exchange of [true, false]) {
    it(`an agent that did not run for a while does not take its own pause for a silent peer (${exchange ? "Exchange stream" : "ReadPieces calls"})`, async () => {
      const [holder, puller] = await startNodes(2, [{ uploadBytesPerSecond: 4 * MiB }, { exchange }]);
      assert.ok(holder && puller);
      const data = testBytes(10 * MiB + 3);
      const digest = await putBlob(holder.store, data);
      await holder.inventory.idle();
      const served = origin.blobBytesServed;
      const pull = puller.pull(origin.host, NAME, digest);
      // Mid-transfer (the holder sends 4 MiB/s), the whole process stops for longer than both the download's
      // stall time (1 s) and the peer client's per-call stall timeout (2 s in SwarmNode).
      const started = performance.now();
      while ((await puller.metric("shoal_peer_bytes_received_total")) < 2 * MiB) {
        assert.ok(performance.now() - started < 20_000, "the transfer started");
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 2.5 * FAST.stallMs);
      const result = await pull;
      assert.equal(digestOf(result.bytes), digest);
      assert.equal(result.source, "peer");
      assert.equal(await puller.metric("shoal_swarm_stalls_total"), 0, "no round ended as stalled");
      assert.equal(await puller.metric("shoal_peer_errors_total"), 0, "no call timed out");
      assert.equal(await puller.metric("shoal_peer_bytes_wasted_total"), 0, "no call was cancelled");
      assert.equal(origin.blobBytesServed, served);
    });
  }
});
