import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { AgentMetrics } from "../metrics/index.js";
import { digestOf } from "../oci/index.js";
import { MemoryBlobStore } from "../store/index.js";
import { OriginFetcher } from "./origin-fetcher.js";
import { FakeUpstream } from "./testing/fake-upstream.js";
import { STARVED_PEER_ACTIVE_MS, STARVED_TRANSFER_MS, TransferWatch } from "./transfer-watch.js";
import { UpstreamClient } from "./upstream/upstream-client.js";

const MiB = 1024 * 1024;

describe("TransferWatch", () => {
  it("cuts a transfer silent for STARVED_TRANSFER_MS only while another from the same registry receives bytes", () => {
    let now = 0;
    const watch = new TransferWatch(() => now, false);
    const starved = watch.begin("origin");
    const flowing = watch.begin("origin");
    const elsewhere = watch.begin("other");
    for (now = 250; now < STARVED_TRANSFER_MS + 500; now += 250) {
      flowing.progress();
      watch.check();
    }
    assert.equal(starved.starved, true, "silent while its sibling flowed");
    assert.equal(starved.signal.aborted, true);
    assert.equal(starved.signal.reason, starved.error);
    assert.equal(starved.error.code, "ERR_UPSTREAM_TIMEOUT");
    assert.equal(flowing.starved, false);
    assert.equal(elsewhere.starved, false, "another registry's silence is that registry's own slowness");
    assert.equal(watch.size, 2, "the cut attempt is no longer watched");
  });

  it("does not cut when the whole registry is silent (slow, not starved), or a transfer alone is", () => {
    let now = 0;
    const watch = new TransferWatch(() => now, false);
    const alone = watch.begin("origin");
    now = 10 * STARVED_TRANSFER_MS;
    watch.check();
    assert.equal(alone.starved, false, "one transfer, silent: the registry is slow");
    const a = watch.begin("origin");
    const b = watch.begin("origin");
    a.progress();
    now += STARVED_PEER_ACTIVE_MS;
    watch.check();
    assert.equal(alone.starved, false, "the other transfer's last bytes are STARVED_PEER_ACTIVE_MS old: no longer moving");
    assert.equal(b.starved, false, "b is young");
    b.end();
    a.end();
    alone.end();
    assert.equal(watch.size, 0);
  });
});

describe("OriginFetcher with a starved transfer", () => {
  it("resumes a transfer that receives nothing while another from the same registry flows, on a new request", async () => {
    const origin = await FakeUpstream.start();
    const logger = pino({ level: "silent" });
    const metrics = new AgentMetrics({ version: "test", collectDefaults: false });
    const store = new MemoryBlobStore();
    const upstream = new UpstreamClient({ upstreams: new Map([[origin.host, origin.url]]), logger });
    const fetcher = new OriginFetcher({ store, upstream, metrics, logger });
    try {
      const flowing = await origin.addBlob({ size: 6 * MiB, seed: "watch-flowing" });
      const starved = await origin.addBlob({ size: MiB, seed: "watch-starved" });
      // About 6 s of bytes beside the starved one; its first request is never answered (headers timeout: 15 s).
      origin.script({ kind: "blob", reference: flowing.digest }, { kind: "body", bytesPerSecond: MiB });
      const hang = origin.script({ kind: "blob", reference: starved.digest }, { kind: "hang" }, { times: 1 });
      const started = performance.now();
      const read = async (digest: typeof flowing.digest): Promise<{ digest: string; ms: number }> => {
        const lease = await fetcher.acquire({ registry: origin.host, name: "watch/app", digest }, AbortSignal.timeout(30_000));
        try {
          const chunks: Buffer[] = [];
          for await (const chunk of lease.partial.createReadStream({ signal: AbortSignal.timeout(30_000) }) as AsyncIterable<Buffer>)
            chunks.push(chunk);
          return { digest: digestOf(Buffer.concat(chunks)), ms: performance.now() - started };
        } finally {
          lease.release();
        }
      };
      const [a, b] = await Promise.all([read(flowing.digest), read(starved.digest)]);
      assert.equal(a.digest, flowing.digest);
      assert.equal(b.digest, starved.digest);
      assert.equal(hang.hits, 1, "the first request hung");
      const requests = origin.requests.filter((r) => r.kind === "blob" && r.path.endsWith(starved.digest));
      assert.equal(requests.length, 2, "and was made again");
      // Cut after STARVED_TRANSFER_MS (checked every 500 ms), well before the 15 s headers timeout.
      assert.ok(b.ms < STARVED_TRANSFER_MS + 3_000, `the starved blob came after ${Math.round(b.ms)} ms`);
      assert.equal(origin.blobBytesServed, flowing.size + starved.size, "each blob's bytes were sent once");
    } finally {
      await fetcher.close();
      await origin.close();
    }
  });
});
