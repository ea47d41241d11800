import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import type { Logger } from "pino";
import { pino } from "pino";
import { digestOf } from "../oci/index.js";
import { FakeUpstream } from "../registry/testing/fake-upstream.js";
import { type AgentIdentity, LocalTracker, MemoryTracker, type Tracker, TrackerError } from "../tracker/index.js";
import { MiB } from "./testing/peer-fixture.js";
import { SwarmNode } from "./testing/swarm-node.js";

const NAME = "degraded/app";
const FAST = { refreshIntervalMs: 100, announceIntervalMs: 50, stallMs: 1_000, relayWaitMs: 1_000 };

/** A tracker session that can be cut off: while `down`, every call fails as an unreachable tracker does. */
class Switchable implements Tracker {
  down = false;
  constructor(private readonly inner: Tracker) {}
  get connected(): boolean {
    return !this.down && this.inner.connected;
  }
  lookup(...args: Parameters<Tracker["lookup"]>): ReturnType<Tracker["lookup"]> {
    return this.down ? Promise.reject(new TrackerError("ERR_TRACKER_UNAVAILABLE", "tracker down")) : this.inner.lookup(...args);
  }
  resolveTag(...args: Parameters<Tracker["resolveTag"]>): ReturnType<Tracker["resolveTag"]> {
    return this.down ? Promise.reject(new TrackerError("ERR_TRACKER_UNAVAILABLE", "tracker down")) : this.inner.resolveTag(...args);
  }
  announce(...args: Parameters<Tracker["announce"]>): void {
    if (!this.down) this.inner.announce(...args);
  }
  withdraw(...args: Parameters<Tracker["withdraw"]>): void {
    if (!this.down) this.inner.withdraw(...args);
  }
  publishTag(...args: Parameters<Tracker["publishTag"]>): void {
    if (!this.down) this.inner.publishTag(...args);
  }
  setActiveUploads(count: number): void {
    this.inner.setActiveUploads(count);
  }
  get sendsNotices(): boolean {
    return !this.down && this.inner.sendsNotices;
  }
  watchBlob(...args: Parameters<Tracker["watchBlob"]>): ReturnType<Tracker["watchBlob"]> {
    return this.inner.watchBlob(...args);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

// Degraded mode: without a tracker, agents keep to the peers they know (and those peers know) and go to
// the origin only when none of them holds or is receiving what they miss.
describe("swarm: the tracker goes away", () => {
  let origin: FakeUpstream;
  let nodes: SwarmNode[] = [];
  const sessions: Switchable[] = [];
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
    sessions.length = 0;
    origin.clearScripts();
  });

  async function startNodes(count: number): Promise<SwarmNode[]> {
    const tracker = new MemoryTracker({ logger });
    const session = (identity: AgentIdentity, nodeLogger: Logger): Tracker => {
      const switchable = new Switchable(new LocalTracker({ tracker, identity, logger: nodeLogger }));
      sessions.push(switchable);
      return switchable;
    };
    nodes = await Promise.all(
      Array.from({ length: count }, (_, i) =>
        SwarmNode.start({ name: `deg-${i}`, tracker: session, origin: { host: origin.host, url: origin.url }, tuning: FAST }),
      ),
    );
    return nodes;
  }

  function trackerDown(): void {
    for (const s of sessions) s.down = true;
  }

  it("killed in the middle of a cold herd: every pull finishes and the origin still sends the blob once", async () => {
    const blob = await origin.addBlob({ size: 16 * MiB + 5, seed: "degraded-herd" });
    // A slow origin: the tracker goes away while the grantee is still fetching.
    origin.script({ kind: "blob", reference: blob.digest }, { kind: "body", bytesPerSecond: 8 * MiB });
    await startNodes(4);
    const pulls = nodes.map((n) => n.pull(origin.host, NAME, blob.digest, AbortSignal.timeout(60_000)));
    await new Promise((resolve) => setTimeout(resolve, 600));
    trackerDown();
    for (const r of await Promise.all(pulls)) assert.equal(digestOf(r.bytes), blob.digest);
    assert.equal(origin.blobBytesServed, blob.size, "one copy left the origin");
  });

  it("a pull that starts while the tracker is away asks the peers it knows before the origin", async () => {
    const first = await origin.addBlob({ size: 3 * MiB, seed: "degraded-first" });
    const second = await origin.addBlob({ size: 5 * MiB + 1, seed: "degraded-second" });
    const [a, b] = await startNodes(2);
    assert.ok(a && b);
    // b hears of a through the tracker (a holds `first`), then a gets `second`, then the tracker goes away.
    await a.pull(origin.host, NAME, first.digest);
    await a.inventory.idle();
    await b.pull(origin.host, NAME, first.digest);
    await a.pull(origin.host, NAME, second.digest);
    await a.inventory.idle();
    trackerDown();
    const served = origin.blobBytesServed;
    const r = await b.pull(origin.host, NAME, second.digest);
    assert.equal(digestOf(r.bytes), second.digest);
    assert.equal(origin.blobBytesServed, served, "nothing from the origin: a had it");
    assert.equal(r.source, "peer");
    assert.ok((await b.metric("shoal_tracker_lookups_total", { result: "peers" })) >= 1);
  });
});
