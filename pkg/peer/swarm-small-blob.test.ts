import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { digestOf } from "../oci/index.js";
import { FakeUpstream } from "../registry/testing/fake-upstream.js";
import { GrpcTrackerClient, MemoryTracker, TrackerServer } from "../tracker/index.js";
import { eventually } from "../tracker/testing/helpers.js";
import { MiB } from "./testing/peer-fixture.js";
import { SwarmNode } from "./testing/swarm-node.js";

const NAME = "small/app";
const NODES = 8;

/**
 * An image pulled by every node at once, as containerd does: a config of 949 bytes and four layers. The
 * config's grantee also fetches layers, and every node's upload is capped, so the grantee's uploads are
 * queued deep with layer pieces when the config arrives there. Before small reads paid the cap ahead of
 * that queue and went on calls of their own, the other nodes had the config 1.3 to 7.8 s after the
 * grantee in this test with 8 MiB layers (the mirror gives up after 10 s); with them, within about 0.1 s
 * (the diagnostic line). Every commit here takes 3 s to make its blob durable (a busy disk's fsync):
 * the config, one piece and its last, is served once its digest is verified, before that.
 */
describe("a small blob (an image config) beside the layers", () => {
  let origin: FakeUpstream;
  const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });
  before(async () => {
    origin = await FakeUpstream.start();
  });
  after(async () => {
    await origin.close();
  });

  it("reaches every node from the swarm, with each blob sent once by the origin", async (t) => {
    const config = await origin.addBlob({ size: 949, seed: "small-config" });
    // The config comes slowly (about 1.5 s), so the layers are well under way when it lands at its grantee.
    origin.script({ kind: "blob", reference: config.digest }, { kind: "body", bytesPerSecond: 600 });
    const layers = await Promise.all([0, 1, 2, 3].map((i) => origin.addBlob({ size: 4 * MiB + i, seed: `small-layer-${i}` })));
    for (const layer of layers) origin.script({ kind: "blob", reference: layer.digest }, { kind: "body", bytesPerSecond: 2 * MiB });
    const tracker = new MemoryTracker({ logger, grantStallTimeoutMs: 10_000 });
    const server = await TrackerServer.start({ host: "127.0.0.1", port: 0, tracker, logger });
    const clients: GrpcTrackerClient[] = [];
    const nodes: SwarmNode[] = [];
    try {
      for (let i = 0; i < NODES; i++) {
        nodes.push(
          await SwarmNode.start({
            name: `small-${i}`,
            tracker: (identity, nodeLogger) => {
              const client = new GrpcTrackerClient({ address: server.address, identity, logger: nodeLogger });
              clients.push(client);
              return client;
            },
            origin: { host: origin.host, url: origin.url },
            uploadBytesPerSecond: 4 * MiB,
            // A busy disk: every commit's fsync and rename take 3 s.
            publishDelayMs: 3_000,
          }),
        );
      }
      await eventually(() => {
        assert.equal(tracker.snapshot().agents.length, NODES);
      }, 10_000);
      const start = performance.now();
      // When each node's copy of the config was durable (committed).
      const durable: number[] = [];
      nodes.forEach((node, i) => {
        node.store.subscribe((event) => {
          if (event.type === "added" && event.blob.digest === config.digest) durable[i] = performance.now() - start;
        });
      });
      // Each node asks for the layers and the config a little apart, as runtimes on different nodes do.
      const layerPulls = nodes.flatMap((node, i) =>
        layers.map(async (layer, k) => {
          await sleep(((i * 7 + k * 3) % 10) * 50);
          return node.pull(origin.host, NAME, layer.digest);
        }),
      );
      const configDone: number[] = [];
      const configs = await Promise.all(
        nodes.map(async (node, i) => {
          await sleep(((i * 3) % 10) * 50);
          const pulled = await node.pull(origin.host, NAME, config.digest);
          configDone[i] = performance.now() - start;
          return pulled;
        }),
      );
      const layerResults = await Promise.all(layerPulls);
      for (const pulled of configs) assert.equal(digestOf(pulled.bytes), config.digest);
      layerResults.forEach((pulled, j) => {
        assert.equal(digestOf(pulled.bytes), layers[j % layers.length]?.digest);
      });
      const grantee = configs.findIndex((c) => c.source === "origin");
      assert.ok(grantee >= 0, "one node fetched the config from the origin");
      assert.deepEqual(
        configs.filter((_, i) => i !== grantee).map((c) => c.source),
        Array.from({ length: NODES - 1 }, () => "peer"),
        "every other node took the config from the swarm",
      );
      const granteeMs = configDone[grantee] ?? 0;
      t.diagnostic(`config after its grantee: ${configDone.map((ms) => `${Math.round(ms - granteeMs)} ms`).join(", ")}`);
      await eventually(() => {
        assert.ok(durable[grantee] !== undefined);
      }, 10_000);
      const granteeDurable = durable[grantee] ?? 0;
      configDone.forEach((ms, i) => {
        if (i !== grantee)
          assert.ok(
            ms < granteeDurable,
            `node ${i} had the config at ${Math.round(ms)} ms, before its grantee's copy was durable (${Math.round(granteeDurable)} ms): the last piece is served once verified`,
          );
      });
      const size = config.size + layers.reduce((sum, layer) => sum + layer.size, 0);
      assert.equal(origin.blobBytesServed, size, "the origin sent each blob once");
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
      for (const client of clients) await client.close();
      await server.close();
    }
  });
});
