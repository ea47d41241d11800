import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { ControllerMetrics } from "../metrics/index.js";
import { digestOf } from "../oci/index.js";
import { FakeUpstream } from "../registry/testing/fake-upstream.js";
import type { Digest } from "../oci/index.js";
import {
  type BlobAnnouncement,
  type BlobChange,
  type BlobChangeListener,
  GrpcTrackerClient,
  type LookupOptions,
  type LookupResult,
  MemoryTracker,
  type TagKey,
  type TagRecord,
  type Tracker,
  TrackerServer,
} from "../tracker/index.js";
import { FAST_CLIENT_OPTIONS } from "../tracker/testing/harnesses.js";
import { eventually } from "../tracker/testing/helpers.js";
import { SwarmNode } from "./testing/swarm-node.js";

const NAME = "notices/app";
const TEN_MINUTES_MS = 600_000;
/**
 * No polling: every lookup interval and the stall timeout are ten minutes, and relays are off (a peer is
 * asked only for pieces the last lookup said it holds, so no piece is ever parked or missed, which would
 * make the download look up by itself). A downloader then learns of the grantee's later pieces only
 * from the tracker's notices.
 */
const NOTICES_ONLY = {
  refreshIntervalMs: TEN_MINUTES_MS,
  parkedRefreshIntervalMs: TEN_MINUTES_MS,
  noticeRefreshIntervalMs: TEN_MINUTES_MS,
  noticeParkedRefreshIntervalMs: TEN_MINUTES_MS,
  stallMs: TEN_MINUTES_MS,
  relayAhead: 0,
  announceIntervalMs: 50,
};

/**
 * The agent's tracker client, counting its lookups, with every notice's change rewritten on its way to the
 * downloads (`rewrite`): dropped (a tracker before deltas) or spoiled (a change that does not fit the blob).
 */
class CountingTracker implements Tracker {
  lookups = 0;

  constructor(
    private readonly inner: Tracker,
    private readonly rewrite: (change: BlobChange | undefined) => BlobChange | undefined,
  ) {}

  get sendsNotices(): boolean {
    return this.inner.sendsNotices;
  }

  get connected(): boolean {
    return this.inner.connected;
  }

  lookup(digest: Digest, options: LookupOptions): Promise<LookupResult> {
    this.lookups++;
    return this.inner.lookup(digest, options);
  }

  announce(announcement: BlobAnnouncement): void {
    this.inner.announce(announcement);
  }

  withdraw(digest: Digest): void {
    this.inner.withdraw(digest);
  }

  publishTag(record: TagRecord): void {
    this.inner.publishTag(record);
  }

  resolveTag(key: TagKey, signal?: AbortSignal): Promise<TagRecord | undefined> {
    return this.inner.resolveTag(key, signal);
  }

  watchBlob(digest: Digest, listener: BlobChangeListener): () => void {
    return this.inner.watchBlob(digest, (change) => {
      listener(this.rewrite(change));
    });
  }

  setActiveUploads(count: number): void {
    this.inner.setActiveUploads(count);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

describe("swarm download driven by the tracker's notices", () => {
  let origin: FakeUpstream;
  const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });

  before(async () => {
    origin = await FakeUpstream.start();
  });
  after(async () => {
    await origin.close();
  });

  /**
   * The grantee fetches a slow blob from the origin; the follower (NOTICES_ONLY: it never polls) downloads it
   * from the grantee as it arrives. Returns the follower's lookups and the notices it received, by kind.
   */
  async function follow(seed: string, rewrite: (change: BlobChange | undefined) => BlobChange | undefined) {
    const blob = await origin.addBlob({ size: 8 * 1024 * 1024 + 77, seed });
    origin.script({ kind: "blob", reference: blob.digest }, { kind: "body", bytesPerSecond: 2 * 1024 * 1024 });
    const servedBefore = origin.blobBytesServed;
    const metrics = new ControllerMetrics({ version: "test", collectDefaults: false });
    const tracker = new MemoryTracker({ logger, metrics });
    const server = await TrackerServer.start({ host: "127.0.0.1", port: 0, tracker, metrics, logger });
    const clients: GrpcTrackerClient[] = [];
    const nodes: SwarmNode[] = [];
    const kinds = new Map<string, number>();
    let counting: CountingTracker | undefined;
    try {
      for (const name of ["grantee", "follower"]) {
        nodes.push(
          await SwarmNode.start({
            name,
            tracker: (identity, nodeLogger) => {
              const client = new GrpcTrackerClient({
                address: server.address,
                identity,
                logger: nodeLogger,
                ...FAST_CLIENT_OPTIONS,
                ...(name === "follower" ? { onNotice: (kind: string) => kinds.set(kind, (kinds.get(kind) ?? 0) + 1) } : {}),
              });
              clients.push(client);
              if (name !== "follower") return client;
              counting = new CountingTracker(client, rewrite);
              return counting;
            },
            origin: { host: origin.host, url: origin.url },
            tuning: NOTICES_ONLY,
          }),
        );
      }
      const [grantee, follower] = nodes;
      assert.ok(grantee && follower && counting);
      const granteePull = grantee.pull(origin.host, NAME, blob.digest);
      await eventually(() => {
        assert.equal(tracker.snapshot().grants[0]?.agentId, grantee.agentId);
      }, 10_000);
      const pulled = await follower.pull(origin.host, NAME, blob.digest);
      assert.equal(digestOf(pulled.bytes), blob.digest);
      assert.equal(pulled.source, "peer");
      assert.equal(digestOf((await granteePull).bytes), blob.digest);
      assert.equal(
        origin.blobBytesServed - servedBefore,
        blob.size,
        "one copy from the origin: the follower waited for the grantee's pieces",
      );
      const notices = [...kinds.values()].reduce((a, b) => a + b, 0);
      return { lookups: counting.lookups, notices, deltas: kinds.get("delta") ?? 0 };
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
      for (const client of clients) await client.close();
      await server.close();
      origin.clearScripts();
    }
  }

  it("a download completes from notices alone while the grantee is still fetching, and their changes spare the lookups", async () => {
    const { lookups, notices, deltas } = await follow("notices-only", (change) => change);
    assert.ok(deltas >= 1, `notices carried changes (${deltas} of ${notices})`);
    assert.ok(lookups < notices, `${lookups} lookups for ${notices} notices: a notice with the change needs none`);
  });

  it("a notice with only the digest (a tracker before deltas) still makes the download look up, and it completes", async () => {
    // Without polling, the follower learns of the grantee's later pieces only by looking up on a notice.
    const { lookups, notices } = await follow("digest only", () => undefined);
    assert.ok(notices >= 1);
    assert.ok(lookups >= 2, `${lookups} lookups: the first, and those the notices asked for`);
  });

  it("a change that does not fit the blob (another size) is looked up instead, and the download completes", async () => {
    const { lookups, deltas } = await follow("spoiled", (change) =>
      change === undefined ? undefined : { ...change, size: change.size + 1 },
    );
    assert.ok(deltas >= 1, "the tracker sent changes");
    assert.ok(lookups >= 2, `${lookups} lookups: the spoiled changes were looked up`);
  });
});
