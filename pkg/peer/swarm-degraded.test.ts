import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import type { Logger } from "pino";
import { pino } from "pino";
import { type Digest, digestOf } from "../oci/index.js";
import { FakeUpstream } from "../registry/testing/fake-upstream.js";
import type { BlobStore } from "../store/index.js";
import { type AgentIdentity, LocalTracker, MemoryTracker, type Tracker, TrackerError } from "../tracker/index.js";
import { MiB } from "./testing/peer-fixture.js";
import { SwarmNode, type SwarmNodeOptions } from "./testing/swarm-node.js";

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
  const bySession = new Map<string, Switchable>();
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
    bySession.clear();
    origin.clearScripts();
  });

  async function startNodes(count: number, servedStore?: (i: number) => SwarmNodeOptions["servedStore"]): Promise<SwarmNode[]> {
    const tracker = new MemoryTracker({ logger });
    const session = (identity: AgentIdentity, nodeLogger: Logger): Tracker => {
      const switchable = new Switchable(new LocalTracker({ tracker, identity, logger: nodeLogger }));
      sessions.push(switchable);
      bySession.set(identity.agentId, switchable);
      return switchable;
    };
    nodes = await Promise.all(
      Array.from({ length: count }, (_, i) =>
        SwarmNode.start({
          name: `deg-${i}`,
          tracker: session,
          origin: { host: origin.host, url: origin.url },
          tuning: FAST,
          servedStore: servedStore?.(i),
        }),
      ),
    );
    return nodes;
  }

  /** The tracker session of `node`. */
  function sessionOf(node: SwarmNode): Switchable {
    const session = bySession.get(node.agentId);
    assert.ok(session);
    return session;
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
  it("a session that comes up while the peers are asked decides, not the origin without a grant", async () => {
    const known = await origin.addBlob({ size: 2 * MiB, seed: "degraded-known" });
    const wanted = await origin.addBlob({ size: 3 * MiB + 7, seed: "degraded-wanted" });
    // c holds only `known`; when b asks it about `wanted` (b's tracker is away), b's session comes back.
    let onStatOfWanted = (): void => undefined;
    const [a, b, c] = await startNodes(3, (i) =>
      i === 2
        ? (store) =>
            hookStat(store, wanted.digest, () => {
              onStatOfWanted();
            })
        : undefined,
    );
    assert.ok(a && b && c);
    await c.pull(origin.host, NAME, known.digest);
    await c.inventory.idle();
    await b.pull(origin.host, NAME, known.digest); // b hears of c through the tracker
    await a.pull(origin.host, NAME, wanted.digest);
    await a.inventory.idle();
    const session = sessionOf(b);
    session.down = true;
    onStatOfWanted = () => {
      session.down = false;
    };
    const served = origin.blobBytesServed;
    const r = await b.pull(origin.host, NAME, wanted.digest);
    assert.equal(digestOf(r.bytes), wanted.digest);
    assert.equal(session.down, false, "the session came back while b asked c");
    assert.equal(origin.blobBytesServed, served, "nothing from the origin: the tracker, back, named a");
    assert.equal(r.source, "peer");
  });
});

/** `store` as served to peers, calling `hook` when a peer asks about `digest` (Stat looks it up first). */
function hookStat(store: BlobStore, digest: Digest, hook: () => void): BlobStore {
  return new Proxy(store, {
    get(target, property, receiver) {
      if (property === "stat") {
        return (...args: Parameters<BlobStore["stat"]>): ReturnType<BlobStore["stat"]> => {
          if (args[0] === digest) hook();
          return target.stat(...args);
        };
      }
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === "function" ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}
