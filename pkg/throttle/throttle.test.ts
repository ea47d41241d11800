import assert from "node:assert/strict";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, it } from "node:test";
import { TokenBucket, throttleStream } from "./index.js";

describe("TokenBucket", () => {
  it("holds a stream to its rate (after the initial burst)", async () => {
    const rate = 4 * 1024 * 1024;
    const bucket = new TokenBucket(rate, { burstBytes: 128 * 1024 });
    const total = 2 * 1024 * 1024;
    const chunks = Array.from({ length: total / 65536 }, () => Buffer.alloc(65536));
    const started = performance.now();
    let received = 0;
    await pipeline(
      Readable.from(chunks),
      throttleStream(bucket),
      new Writable({
        write(chunk: Buffer, _e, cb) {
          received += chunk.length;
          cb();
        },
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    assert.equal(received, total);
    const expected = (total - 128 * 1024) / rate;
    assert.ok(seconds >= expected * 0.9, `took ${seconds}s, expected at least ${expected}s`);
    assert.ok(seconds < expected * 2 + 0.2, `took ${seconds}s, expected about ${expected}s`);
  });

  it("shares the rate between concurrent streams", async () => {
    const rate = 8 * 1024 * 1024;
    const bucket = new TokenBucket(rate, { burstBytes: 128 * 1024 });
    const started = performance.now();
    await Promise.all([0, 1].map(() => bucket.take(2 * 1024 * 1024)));
    const seconds = (performance.now() - started) / 1000;
    assert.ok(seconds >= ((4 * 1024 * 1024 - 128 * 1024) / rate) * 0.9, `two 2 MiB takes at 8 MiB/s took ${seconds}s`);
  });

  it("stops waiting when aborted", async () => {
    const bucket = new TokenBucket(1024, { burstBytes: 1024 });
    await bucket.take(1024);
    await assert.rejects(bucket.take(1024 * 1024, AbortSignal.timeout(20)), { name: "AbortError" });
  });
});
