import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { digestOf } from "../oci/index.js";
import { FakeUpstream } from "../registry/testing/fake-upstream.js";
import { MemoryTracker } from "../tracker/index.js";
import { MiB } from "./testing/peer-fixture.js";
import { SwarmNode } from "./testing/swarm-node.js";

const NAME = "fanout/app";
const FAST = { refreshIntervalMs: 100, announceIntervalMs: 50, stallMs: 1_000, relayWaitMs: 1_000, siblingWaitMs: 500 };
const NODES = 6;

describe("swarm fan-out (super-seeding)", () => {
  let origin: FakeUpstream;
  let nodes: SwarmNode[] = [];
  const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });

  before(async () => {
    origin = await FakeUpstream.start();
  });
  after(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    await origin.close();
  });

  it("fresh pieces leave the grantee about once; the downloaders relay them to each other", async (t) => {
    const blob = await origin.addBlob({ size: 16 * MiB + 77, seed: "swarm-fanout" });
    // The origin and every upload as fast as each other: the grantee cannot serve five copies in time.
    origin.script({ kind: "blob", reference: blob.digest }, { kind: "body", bytesPerSecond: 8 * MiB });
    const tracker = new MemoryTracker({ logger, grantStallTimeoutMs: 1_000 });
    nodes = await Promise.all(
      Array.from({ length: NODES }, (_, i) =>
        SwarmNode.start({
          name: `fan-${i}`,
          tracker,
          origin: { host: origin.host, url: origin.url },
          tuning: FAST,
          uploadBytesPerSecond: 8 * MiB,
        }),
      ),
    );
    const results = await Promise.all(nodes.map((n) => n.pull(origin.host, NAME, blob.digest)));
    for (const r of results) assert.equal(digestOf(r.bytes), blob.digest);
    assert.equal(origin.blobBytesServed, blob.size, "the origin sent the blob once");
    const granteeIndex = results.findIndex((r) => r.source === "origin");
    const grantee = nodes[granteeIndex];
    assert.ok(grantee, "one node fetched from the origin");
    const sent = await Promise.all(nodes.map((n) => n.metric("shoal_peer_bytes_sent_total")));
    const granteeSent = sent[granteeIndex] ?? 0;
    const others = sent.reduce((a, b) => a + b, 0) - granteeSent;
    t.diagnostic(`grantee sent ${(granteeSent / blob.size).toFixed(2)} copies, the others ${(others / blob.size).toFixed(2)}`);
    assert.ok(
      granteeSent <= 2.5 * blob.size,
      `the grantee sent ${(granteeSent / blob.size).toFixed(2)} copies (others ${(others / blob.size).toFixed(2)}); fan-out keeps it near one`,
    );
    assert.ok(
      others >= (NODES - 1 - 2.5) * blob.size,
      `the downloaders relayed ${(others / blob.size).toFixed(2)} copies among themselves`,
    );
  });
});
