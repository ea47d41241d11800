import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { digestOf } from "../oci/index.js";
import { FakeUpstream } from "../registry/testing/fake-upstream.js";
import { LocalTracker, MemoryTracker } from "../tracker/index.js";
import { testIdentity } from "../tracker/testing/helpers.js";
import { MiB } from "./testing/peer-fixture.js";
import { SwarmNode } from "./testing/swarm-node.js";

const NAME = "silent/app";

describe("swarm: an origin grantee that announces nothing", () => {
  const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });

  it(
    "loses its grant to a waiting agent after the tracker's stall timeout, and the others wait for the new grantee instead of fetching the blob themselves",
    { timeout: 60_000 },
    async () => {
      // Seen in `npm run bench`: a grantee whose origin connection crawled announced nothing of a layer for
      // 10 s, and every other agent fetched the layer from the origin. Here the grant moves after 3 s of
      // silence (--grant-stall-timeout), and the new grantee's first piece comes about 2 s after that. The
      // agents wait 4 s for a grantee: counted from their first lookup, the wait would run out before that
      // piece, and all three would fetch the blob; a moved grant restarts it.
      const origin = await FakeUpstream.start();
      const tracker = new MemoryTracker({ logger, grantStallTimeoutMs: 3_000 });
      const silent = new LocalTracker({ tracker, identity: testIdentity("silent"), logger });
      const nodes: SwarmNode[] = [];
      try {
        const blob = await origin.addBlob({ size: 2 * MiB, seed: "silent-grantee" });
        origin.script({ kind: "blob", reference: blob.digest }, { kind: "body", bytesPerSecond: 512 * 1024 });
        const held = await silent.lookup(blob.digest, { wantOriginGrant: true });
        assert.equal(held.origin.granted, true, "the silent agent holds the grant");
        for (let i = 0; i < 3; i++) {
          nodes.push(
            await SwarmNode.start({
              name: `waiter-${i}`,
              tracker,
              origin: { host: origin.host, url: origin.url },
              tuning: { granteeWaitMs: 4_000 },
            }),
          );
        }
        const results = await Promise.all(nodes.map((n) => n.pull(origin.host, NAME, blob.digest)));
        for (const r of results) assert.equal(digestOf(r.bytes), blob.digest);
        const fetches = origin.requests.filter((r) => r.kind === "blob" && r.reference === blob.digest).length;
        assert.equal(fetches, 1, `one agent took the moved grant and the others waited for it (${fetches} origin fetches)`);
        assert.deepEqual(results.map((r) => r.source).sort(), ["origin", "peer", "peer"]);
      } finally {
        await Promise.all(nodes.map((n) => n.stop()));
        await silent.close();
        await origin.close();
      }
    },
  );
});
