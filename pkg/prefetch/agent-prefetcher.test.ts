import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { AgentMetrics } from "../metrics/index.js";
import { digestOf } from "../oci/index.js";
import { SwarmNode } from "../peer/testing/swarm-node.js";
import { ContentSeeder, OriginFetcher, UpstreamClient } from "../registry/index.js";
import { FakeUpstream } from "../registry/testing/fake-upstream.js";
import { MemoryBlobStore } from "../store/index.js";
import {
  type AgentCommand,
  MemoryTracker,
  type PrefetchAssignment,
  type PrefetchChannel,
  type PrefetchHandler,
  type PrefetchReport,
} from "../tracker/index.js";
import { eventually } from "../tracker/testing/helpers.js";
import { AgentPrefetcher } from "./agent-prefetcher.js";

const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });
const MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json";

/** The session as the prefetcher sees it: commands in, reports out. */
class FakeChannel implements PrefetchChannel {
  handler: PrefetchHandler | undefined;
  readonly reports: PrefetchReport[] = [];
  setPrefetchHandler(handler: PrefetchHandler | undefined): void {
    this.handler = handler;
  }
  reportPrefetch(report: PrefetchReport): void {
    this.reports.push(report);
  }
  send(command: AgentCommand): void {
    this.handler?.onCommand(command);
  }
  last(id: string): PrefetchReport | undefined {
    return this.reports.filter((r) => r.id === id).at(-1);
  }
}

interface Image {
  readonly manifest: Buffer;
  readonly blobs: { digest: ReturnType<typeof digestOf>; size: number }[];
}

async function addImage(origin: FakeUpstream, seed: string, sizes: readonly number[]): Promise<Image> {
  const blobs = [];
  for (const [i, size] of sizes.entries()) blobs.push(await origin.addBlob({ size, seed: `${seed}-${i}` }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MANIFEST_TYPE,
      config: { ...blobs[0], mediaType: "application/vnd.oci.image.config.v1+json" },
      layers: blobs.slice(1).map((b) => ({ ...b, mediaType: "application/vnd.oci.image.layer.v1.tar" })),
    }),
  );
  origin.addManifest("team/app", "v1", manifest, MANIFEST_TYPE);
  return { manifest, blobs };
}

function assignmentOf(
  id: string,
  origin: FakeUpstream,
  image: Image,
  credentials?: { username: string; password: string },
): PrefetchAssignment {
  return {
    id,
    contents: [
      {
        registry: origin.host,
        repository: "team/app",
        manifests: [{ digest: digestOf(image.manifest), mediaType: MANIFEST_TYPE, body: image.manifest }],
        blobs: image.blobs,
        credentials,
      },
    ],
  };
}

describe("AgentPrefetcher with the origin fetcher (one agent, no tracker)", () => {
  let origin: FakeUpstream;
  before(async () => {
    origin = await FakeUpstream.start();
  });
  after(async () => {
    await origin.close();
  });

  function agent(from: FakeUpstream = origin): {
    store: MemoryBlobStore;
    channel: FakeChannel;
    prefetcher: AgentPrefetcher;
    metrics: AgentMetrics;
    upstream: UpstreamClient;
    close: () => Promise<void>;
  } {
    const store = new MemoryBlobStore();
    const metrics = new AgentMetrics({ version: "test", collectDefaults: false });
    const upstream = new UpstreamClient({ upstreams: new Map([[from.host, from.url]]), logger });
    const fetcher = new OriginFetcher({ store, upstream, metrics, logger });
    const channel = new FakeChannel();
    const prefetcher = new AgentPrefetcher({
      channel,
      seeder: new ContentSeeder({ store, fetcher, logger }),
      metrics,
      logger,
      reportIntervalMs: 50,
    });
    prefetcher.start();
    return {
      store,
      channel,
      prefetcher,
      metrics,
      upstream,
      close: async () => {
        await prefetcher.stop();
        await fetcher.close();
        await upstream.close();
        await store.close();
      },
    };
  }

  it("stores the manifest, fetches every blob, reports done with bytes by source; a reminder after eviction fetches what is missing", async () => {
    const image = await addImage(origin, "done", [1000, 300_000, 2_000_000]);
    const a = agent();
    try {
      a.channel.send({ kind: "prefetch", assignment: assignmentOf("p1", origin, image) });
      await eventually(() => {
        assert.equal(a.channel.last("p1")?.state, "done");
      }, 10_000);
      const done = a.channel.last("p1")!;
      assert.equal(done.itemsTotal, 4);
      assert.equal(done.itemsDone, 4);
      assert.equal(done.bytesFromOrigin, 1000 + 300_000 + 2_000_000);
      assert.equal(a.channel.reports[0]?.state, "running", "a running report first");
      assert.equal((await a.store.stat(digestOf(image.manifest)))?.mediaType, MANIFEST_TYPE, "the manifest is stored with its media type");
      for (const blob of image.blobs) assert.equal((await a.store.stat(blob.digest))?.size, blob.size);
      assert.match(await a.metrics.registry.getSingleMetricAsString("shoal_prefetch_bytes_total"), /source="origin"\} 2301000/);

      await a.store.delete(image.blobs[2]!.digest);
      const served = origin.blobBytesServed;
      a.channel.send({ kind: "prefetch", assignment: assignmentOf("p1", origin, image) });
      await eventually(() => {
        assert.equal(a.channel.reports.filter((r) => r.id === "p1" && r.state === "done").length, 2);
      }, 10_000);
      const again = a.channel.last("p1")!;
      assert.equal(again.bytesFromOrigin, 2_000_000, "only the evicted blob came from the origin");
      assert.equal(again.bytesAlreadyHeld, 301_000);
      assert.equal(origin.blobBytesServed - served, 2_000_000);
    } finally {
      await a.close();
    }
  });

  it("uses the assignment's credentials for the origin, and fails with code auth without them", async () => {
    const secured = await FakeUpstream.start();
    secured.requireBasic({ username: "robot", password: "s3cret" });
    const image = await addImage(secured, "auth", [5000, 7000]);
    const { channel, upstream, close } = agent(secured);
    try {
      channel.send({ kind: "prefetch", assignment: assignmentOf("anon", secured, image) });
      await eventually(() => {
        assert.equal(channel.last("anon")?.state, "failed");
      }, 10_000);
      assert.equal(channel.last("anon")?.error?.code, "auth");
      assert.match(channel.last("anon")?.error?.message ?? "", /requires credentials/);
      channel.send({ kind: "prefetch", assignment: assignmentOf("robot", secured, image, { username: "robot", password: "s3cret" }) });
      await eventually(() => {
        assert.equal(channel.last("robot")?.state, "done");
      }, 10_000);
      assert.equal(channel.last("robot")?.bytesFromOrigin, 12_000);
      // A pull without credentials for another blob of the same repository is still refused: nothing leaked into the client's token cache.
      const other = await secured.addBlob({ size: 100, seed: "other" });
      const response = await upstream
        .request(secured.host, { method: "GET", path: `/v2/team/app/blobs/${other.digest}`, name: "team/app" })
        .catch((e: unknown) => e);
      assert.ok(response instanceof Error && /requires credentials/.test(response.message));
    } finally {
      await close();
      await secured.close();
    }
  });

  it("a blob the origin does not have fails the assignment with not_found; a manifest that does not match its digest with digest_mismatch", async () => {
    const a = agent();
    try {
      const image = await addImage(origin, "missing", [100]);
      const missing: PrefetchAssignment = {
        id: "nf",
        contents: [{ ...assignmentOf("nf", origin, image).contents[0]!, blobs: [{ digest: digestOf("nowhere"), size: 7 }] }],
      };
      a.channel.send({ kind: "prefetch", assignment: missing });
      await eventually(() => {
        assert.equal(a.channel.last("nf")?.error?.code, "not_found");
      }, 10_000);
      const forged: PrefetchAssignment = {
        id: "forged",
        contents: [
          {
            registry: origin.host,
            repository: "team/app",
            manifests: [{ digest: digestOf("other"), mediaType: MANIFEST_TYPE, body: image.manifest }],
            blobs: [],
          },
        ],
      };
      a.channel.send({ kind: "prefetch", assignment: forged });
      await eventually(() => {
        assert.equal(a.channel.last("forged")?.error?.code, "digest_mismatch");
      });
      assert.equal(await a.store.stat(digestOf("other")), undefined, "nothing stored under the forged digest");
    } finally {
      await a.close();
    }
  });

  it("cancel and the end of the session stop the work; fetched pieces stay for the next attempt", async () => {
    const image = await addImage(origin, "cancel", [8 * 1024 * 1024]);
    const slow = origin.script({ kind: "blob" }, { kind: "body", bytesPerSecond: 2 * 1024 * 1024 });
    const a = agent();
    try {
      a.channel.send({ kind: "prefetch", assignment: assignmentOf("c1", origin, image) });
      await eventually(() => {
        assert.ok((a.store.getPartial(image.blobs[0]!.digest)?.heldPieces ?? 0) > 0);
      }, 10_000);
      a.channel.send({ kind: "prefetch-cancel", id: "c1" });
      assert.deepEqual(a.prefetcher.running, []);
      await eventually(() => {
        // ok(), not equal(): a failing equal() would render the whole partial (megabytes) into its message.
        assert.ok(a.store.getPartial(image.blobs[0]!.digest) === undefined, "the transfer stopped");
      });
      const partial = (await a.store.listPartials()).find((p) => p.digest === image.blobs[0]!.digest);
      assert.ok(partial !== undefined, "its pieces are kept");
      a.channel.send({ kind: "prefetch", assignment: assignmentOf("c2", origin, image) });
      await eventually(() => {
        assert.deepEqual(a.prefetcher.running, ["c2"]);
      });
      a.channel.handler?.onSessionLost();
      assert.deepEqual(a.prefetcher.running, []);
      assert.equal(a.channel.last("c2")?.state, "running", "no done or failed report for cancelled work");
      await eventually(async () => {
        assert.match(await a.metrics.registry.getSingleMetricAsString("shoal_prefetch_assignments_total"), /result="cancelled"\} 2/);
      });
    } finally {
      slow.remove();
      await a.close();
    }
  });
});

describe("AgentPrefetcher through the swarm", () => {
  let origin: FakeUpstream;
  before(async () => {
    origin = await FakeUpstream.start();
  });
  after(async () => {
    await origin.close();
  });

  it("two seeds prefetching the same image at once: the origin sends each blob once", async () => {
    const tracker = new MemoryTracker({ logger });
    const nodes = [
      await SwarmNode.start({ name: "seed-a", zone: "a", tracker, origin: { host: origin.host, url: origin.url } }),
      await SwarmNode.start({ name: "seed-b", zone: "b", tracker, origin: { host: origin.host, url: origin.url } }),
    ];
    const image = await addImage(origin, "swarm", [4096, 3 * 1024 * 1024, 5 * 1024 * 1024 + 3]);
    const channels = nodes.map(() => new FakeChannel());
    const prefetchers = nodes.map(
      (node, i) =>
        new AgentPrefetcher({
          channel: channels[i]!,
          seeder: new ContentSeeder({ store: node.store, fetcher: node.fetcher, logger }),
          logger,
          reportIntervalMs: 50,
        }),
    );
    try {
      const served = origin.blobBytesServed;
      for (const p of prefetchers) p.start();
      for (const c of channels) c.send({ kind: "prefetch", assignment: assignmentOf("s", origin, image) });
      await eventually(() => {
        for (const c of channels) assert.equal(c.last("s")?.state, "done");
      }, 30_000);
      const total = image.blobs.reduce((n, b) => n + b.size, 0);
      assert.equal(origin.blobBytesServed - served, total, "each blob left the origin once");
      const fromPeers = channels.reduce((n, c) => n + (c.last("s")?.bytesFromPeers ?? 0), 0);
      assert.ok(fromPeers > 0, "one seed took blobs from the other");
      await eventually(() => {
        for (const node of nodes) for (const b of image.blobs) assert.equal(tracker.holdsComplete(node.agentId, b.digest), true);
        for (const node of nodes)
          assert.equal(tracker.holdsComplete(node.agentId, digestOf(image.manifest)), true, "the manifest is announced too");
      });
    } finally {
      for (const p of prefetchers) await p.stop();
      for (const node of nodes) await node.stop();
    }
  });
});
