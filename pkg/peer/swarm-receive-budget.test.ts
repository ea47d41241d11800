import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { digestOf } from "../oci/index.js";
import { FakeUpstream } from "../registry/testing/fake-upstream.js";
import { MemoryTracker } from "../tracker/index.js";
import { MIN_PIECES_PER_DOWNLOAD } from "./receive-budget.js";
import { MiB } from "./testing/peer-fixture.js";
import { SwarmNode } from "./testing/swarm-node.js";

const NAME = "budget/app";
const HOLDERS = 3;

/**
 * One node downloads two layers at once from three complete holders whose uploads are capped. Without a
 * node-wide limit it would ask each holder for 4 pieces per download (24 pieces in flight, all waiting in
 * the holders' send queues); with a receive budget fixed at 2 MiB it keeps at most the budget, or the
 * 2 pieces each download may always keep asked for, whichever is more.
 */
describe("the receive budget", () => {
  let origin: FakeUpstream;
  const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });
  before(async () => {
    origin = await FakeUpstream.start();
  });
  after(async () => {
    await origin.close();
  });

  it("bounds what a node's downloads ask their peers for together, and gives it all back at the end", async (t) => {
    const layers = await Promise.all([0, 1].map((i) => origin.addBlob({ size: 8 * MiB + i, seed: `budget-layer-${i}` })));
    const tracker = new MemoryTracker({ logger, grantStallTimeoutMs: 10_000 });
    const nodes: SwarmNode[] = [];
    try {
      for (let i = 0; i < HOLDERS; i++) {
        nodes.push(
          await SwarmNode.start({
            name: `holder-${i}`,
            tracker,
            origin: { host: origin.host, url: origin.url },
            uploadBytesPerSecond: 8 * MiB,
          }),
        );
      }
      // The holders get the layers first (one of them from the origin, the others from it).
      for (const node of nodes) for (const layer of layers) await node.pull(origin.host, NAME, layer.digest);
      const budget = 2 * MiB;
      const downloader = await SwarmNode.start({
        name: "downloader",
        tracker,
        origin: { host: origin.host, url: origin.url },
        tuning: { minReceiveBytes: budget, maxReceiveBytes: budget },
      });
      nodes.push(downloader);
      let most = 0;
      let samples = 0;
      const sampler = setInterval(() => {
        void downloader.metric("shoal_swarm_requested_bytes").then((bytes) => {
          most = Math.max(most, bytes);
          samples++;
        });
      }, 5);
      let pulled: { bytes: Buffer; source: string }[];
      try {
        pulled = await Promise.all(layers.map((layer) => downloader.pull(origin.host, NAME, layer.digest)));
      } finally {
        clearInterval(sampler);
      }
      pulled.forEach((p, i) => {
        assert.equal(p.source, "peer");
        assert.equal(digestOf(p.bytes), layers[i]?.digest);
      });
      t.diagnostic(`most asked for at once: ${most / MiB} MiB in ${samples} samples`);
      assert.ok(samples > 10, "the gauge was sampled while the layers came");
      // The pieces are 1 MiB (the default for 8 MiB blobs): at most the budget, or two pieces per download.
      const bound = Math.max(budget, layers.length * MIN_PIECES_PER_DOWNLOAD * MiB);
      assert.ok(most > 0, "pieces were asked for");
      assert.ok(most <= bound, `at most ${bound / MiB} MiB asked for at once, saw ${most / MiB} MiB`);
      assert.equal(await downloader.metric("shoal_swarm_requested_bytes"), 0, "every byte asked for is settled");
      assert.equal(origin.blobBytesServed, layers[0]!.size + layers[1]!.size, "the origin sent each layer once");
    } finally {
      await Promise.all(nodes.map((n) => n.stop()));
    }
  });
});
