import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { ControllerMetrics } from "../metrics/index.js";
import { digestOf } from "../oci/index.js";
import { FakeUpstream } from "../registry/testing/fake-upstream.js";
import { GrpcTrackerClient, MemoryTracker, TrackerServer } from "../tracker/index.js";
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

describe("swarm download driven by the tracker's notices", () => {
  let origin: FakeUpstream;
  const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });

  before(async () => {
    origin = await FakeUpstream.start();
  });
  after(async () => {
    await origin.close();
  });

  it("a download completes from notices alone while the grantee is still fetching from the origin", async () => {
    const blob = await origin.addBlob({ size: 8 * 1024 * 1024 + 77, seed: "notices-only" });
    // A slow origin: the grantee holds the blob only after seconds, piece by piece.
    origin.script({ kind: "blob", reference: blob.digest }, { kind: "body", bytesPerSecond: 2 * 1024 * 1024 });
    const metrics = new ControllerMetrics({ version: "test", collectDefaults: false });
    const tracker = new MemoryTracker({ logger, metrics });
    const server = await TrackerServer.start({ host: "127.0.0.1", port: 0, tracker, metrics, logger });
    const clients: GrpcTrackerClient[] = [];
    const nodes: SwarmNode[] = [];
    try {
      for (const name of ["grantee", "follower"]) {
        nodes.push(
          await SwarmNode.start({
            name,
            tracker: (identity, nodeLogger) => {
              const client = new GrpcTrackerClient({ address: server.address, identity, logger: nodeLogger, ...FAST_CLIENT_OPTIONS });
              clients.push(client);
              return client;
            },
            origin: { host: origin.host, url: origin.url },
            tuning: NOTICES_ONLY,
          }),
        );
      }
      const [grantee, follower] = nodes;
      assert.ok(grantee && follower);
      const granteePull = grantee.pull(origin.host, NAME, blob.digest);
      await eventually(() => {
        assert.equal(tracker.snapshot().grants[0]?.agentId, grantee.agentId);
      }, 10_000);
      const pulled = await follower.pull(origin.host, NAME, blob.digest);
      assert.equal(digestOf(pulled.bytes), blob.digest);
      assert.equal(pulled.source, "peer");
      assert.equal(digestOf((await granteePull).bytes), blob.digest);
      assert.equal(origin.blobBytesServed, blob.size, "one copy from the origin: the follower waited for the grantee's pieces");
      const sent = (await metrics.registry.getSingleMetric("shoal_tracker_notices_sent_total")?.get())?.values[0]?.value ?? 0;
      assert.ok(sent >= 1, `the follower was told of the grantee's pieces (${sent} notices)`);
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
      for (const client of clients) await client.close();
      await server.close();
      origin.clearScripts();
    }
  });
});
