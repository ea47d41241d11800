import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { pino } from "pino";
import { AgentMetrics } from "../metrics/index.js";
import { digestOf } from "../oci/index.js";
import { MemoryBlobStore } from "../store/index.js";
import { OriginFetcher } from "./origin-fetcher.js";
import { FakeUpstream } from "./testing/fake-upstream.js";
import { MOVING_BYTES, STARVED_RATIO, STARVED_TRANSFER_MS, TransferWatch, isStarvedError } from "./transfer-watch.js";
import { UpstreamClient } from "./upstream/upstream-client.js";

const MiB = 1024 * 1024;

/** Runs the watch's checks for `ms` of its clock (every 500 ms), calling `tick` before each. */
function run(watch: TransferWatch, ms: number, tick: () => void): void {
  for (let t = 0; t < ms; t += 500) {
    tick();
    watch.check();
  }
}

describe("TransferWatch", () => {
  it("cuts a transfer that gets under 1/16 of its busiest sibling's bytes over the window, once it is that old", () => {
    const watch = new TransferWatch(false);
    const starved = watch.begin("origin");
    const trickle = watch.begin("origin");
    const fair = watch.begin("origin");
    const flowing = watch.begin("origin");
    const elsewhere = watch.begin("other");
    const cutOnly = watch.begin("origin", false);
    // Six checks: the first is the window's start, so a whole window needs one more.
    run(watch, STARVED_TRANSFER_MS, () => {
      flowing.progress(MiB);
      fair.progress(MiB / 4);
      trickle.progress(MiB / 64);
    });
    assert.equal(starved.starved, false, "not judged before a whole window");
    run(watch, 500, () => {
      flowing.progress(MiB);
      fair.progress(MiB / 4);
      trickle.progress(MiB / 64);
    });
    assert.equal(starved.starved, true, "nothing while its sibling brought 6 MiB");
    assert.equal(starved.signal.reason, starved.error);
    assert.equal(starved.error.code, "ERR_UPSTREAM_TIMEOUT");
    assert.ok(isStarvedError(starved.error));
    assert.equal(trickle.starved, true, `1/64 of the busiest is under 1/${STARVED_RATIO}`);
    assert.equal(fair.starved, false, "a quarter of the busiest is its share, not starvation");
    assert.equal(flowing.starved, false);
    assert.equal(elsewhere.starved, false, "another registry's silence is that registry's own");
    assert.equal(cutOnly.starved, false, "one that may not be cut (MAX_STARVED_CUTS) is left to its pace");
    assert.equal(watch.size, 4, "cut attempts are no longer watched");
  });

  it("cuts nothing while the registry as a whole moves little (slow, not starved), or a transfer is alone", () => {
    const watch = new TransferWatch(false);
    const alone = watch.begin("origin");
    run(watch, 10 * STARVED_TRANSFER_MS, () => undefined);
    assert.equal(alone.starved, false, "one silent transfer: the registry is slow");
    const slow = watch.begin("origin");
    run(watch, 2 * STARVED_TRANSFER_MS, () => {
      slow.progress(MOVING_BYTES / 16);
    });
    assert.equal(alone.starved, false, `its sibling brought less than ${MOVING_BYTES} bytes in a window`);
    slow.end();
    alone.end();
    assert.equal(watch.size, 0);
    assert.equal(isStarvedError(new Error("other")), false);
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
      assert.ok(b.ms < 2 * STARVED_TRANSFER_MS + 1_000, `the starved blob came after ${Math.round(b.ms)} ms`);
      assert.equal(origin.blobBytesServed, flowing.size + starved.size, "each blob's bytes were sent once");
    } finally {
      await fetcher.close();
      await origin.close();
    }
  });
});
