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

  it("takeAhead pays at once, ahead of a queued take, and the waiters sleep the debt off", async () => {
    const rate = 1024 * 1024;
    const bucket = new TokenBucket(rate, { burstBytes: 128 * 1024 });
    const started = performance.now();
    let queuedDone = false;
    // Queued first: 256 KiB, of which the burst pays half; it waits for the rest.
    const queued = bucket.take(256 * 1024).then(() => (queuedDone = true));
    // Paid at once (synchronously), while the take above still waits: 384 KiB of debt.
    bucket.takeAhead(256 * 1024);
    assert.equal(queuedDone, false, "the queued take was not served first");
    await queued;
    const seconds = (performance.now() - started) / 1000;
    // 512 KiB in all at 1 MiB/s less the 128 KiB burst: the rate holds with the ahead payment in it.
    const expected = (512 * 1024 - 128 * 1024) / rate;
    assert.ok(seconds >= expected * 0.9, `the queued take ended after ${seconds.toFixed(3)} s, expected at least ${expected.toFixed(3)} s`);
  });

  it("stops waiting when aborted", async () => {
    const bucket = new TokenBucket(1024, { burstBytes: 1024 });
    await bucket.take(1024);
    await assert.rejects(bucket.take(1024 * 1024, AbortSignal.timeout(20)), { name: "AbortError" });
  });
});
