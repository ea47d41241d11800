import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import { CoalescingWriter } from "./coalescing-writer.js";

describe("CoalescingWriter", () => {
  it("writes everything in order, batching chunks that arrive during a write", async () => {
    const writes: Buffer[] = [];
    const writer = new CoalescingWriter(async (data) => {
      writes.push(Buffer.from(data));
      await sleep(5);
    });
    for (let i = 0; i < 20; i++) await writer.push(Buffer.from([i]));
    await writer.flush();
    assert.deepEqual(Buffer.concat(writes), Buffer.from(Array.from({ length: 20 }, (_, i) => i)));
    assert.ok(writes.length < 20, `expected fewer writes than chunks, got ${writes.length}`);
    assert.equal(writes[0]?.length, 1, "the first chunk is written at once, not held back");
  });

  it("gathers every batch into the same buffer, and a lone chunk is written as it is", async () => {
    const memories: ArrayBufferLike[] = [];
    const written: Buffer[] = [];
    let release: () => void = () => undefined;
    const writer = new CoalescingWriter(async (data) => {
      memories.push(data.buffer);
      written.push(Buffer.from(data));
      await new Promise<void>((resolve) => {
        release = resolve;
      });
    });
    const lone = Buffer.from([0]);
    await writer.push(lone);
    for (const round of [1, 2]) {
      // Queued while the previous write is in flight: gathered into one batch.
      await writer.push(Buffer.from([round, round]));
      await writer.push(Buffer.from([round + 10]));
      release();
      await new Promise((resolve) => setImmediate(resolve));
    }
    release();
    await writer.flush();
    assert.deepEqual(written, [Buffer.from([0]), Buffer.from([1, 1, 11]), Buffer.from([2, 2, 12])]);
    assert.equal(memories[0], lone.buffer, "a lone chunk is not copied");
    assert.notEqual(memories[1], lone.buffer);
    assert.equal(memories[1], memories[2], "both batches were gathered into one reused buffer");
  });

  it("makes the producer wait past the queue limit, only until the write in flight ends", async () => {
    const releases: (() => void)[] = [];
    const sizes: number[] = [];
    const writer = new CoalescingWriter(
      (data) => {
        sizes.push(data.length);
        return new Promise<void>((resolve) => {
          releases.push(resolve);
        });
      },
      { maxQueuedBytes: 10 },
    );
    await writer.push(Buffer.alloc(4));
    await writer.push(Buffer.alloc(4));
    let waiting = true;
    const blocked = writer.push(Buffer.alloc(8)).then(() => (waiting = false));
    await turns(5);
    assert.equal(waiting, true, "push over the limit waits for the write in flight");
    releases.shift()?.();
    await turns(5);
    assert.equal(waiting, false, "the producer goes on once the write in flight ended");
    await blocked;
    // The queue became the next batch, which is still being written: the producer reads on meanwhile.
    assert.deepEqual(sizes, [4, 12]);
    assert.equal(releases.length, 1, "the second write is still in flight");
    await writer.push(Buffer.alloc(4));
    releases.shift()?.();
    await turns(5);
    releases.shift()?.();
    await writer.flush();
    assert.deepEqual(sizes, [4, 12, 4]);
  });

  it("fails a producer waiting past the limit when the write in flight fails", async () => {
    let fail: (error: Error) => void = () => undefined;
    const writer = new CoalescingWriter(
      () =>
        new Promise<void>((_resolve, reject) => {
          fail = reject;
        }),
      { maxQueuedBytes: 10 },
    );
    await writer.push(Buffer.alloc(4));
    const blocked = writer.push(Buffer.alloc(12));
    fail(new Error("disk full"));
    await assert.rejects(blocked, /disk full/);
  });

  it("reports a write error to the producer", async () => {
    const writer = new CoalescingWriter(() => Promise.reject(new Error("disk full")));
    await writer.push(Buffer.alloc(1));
    await assert.rejects(writer.flush(), /disk full/);
    await assert.rejects(writer.push(Buffer.alloc(1)), /disk full/);
  });
});

describe("CoalescingWriter with a linger", () => {
  /** A writer with a 20 ms linger and 8-byte batches, recording what it writes (timers mocked). */
  function lingering(): { writer: CoalescingWriter; writes: Buffer[] } {
    const writes: Buffer[] = [];
    const writer = new CoalescingWriter(
      async (data) => {
        writes.push(Buffer.from(data));
        await Promise.resolve();
      },
      { lingerMs: 20, minBatchBytes: 8 },
    );
    return { writer, writes };
  }

  it("holds chunks that arrive while no write runs for the linger, then writes them as one batch", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const { writer, writes } = lingering();
    await writer.push(Buffer.from([1]));
    t.mock.timers.tick(10);
    await writer.push(Buffer.from([2, 3]));
    await turns(3);
    assert.deepEqual(writes, [], "written before the linger ended");
    t.mock.timers.tick(10);
    await turns(3);
    assert.deepEqual(writes, [Buffer.from([1, 2, 3])]);
    // The next chunk lingers again.
    await writer.push(Buffer.from([4]));
    await turns(3);
    assert.equal(writes.length, 1);
    t.mock.timers.tick(20);
    await turns(3);
    assert.deepEqual(writes, [Buffer.from([1, 2, 3]), Buffer.from([4])]);
  });

  it("writes at once when a batch's worth is queued", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const { writer, writes } = lingering();
    await writer.push(Buffer.alloc(5, 1));
    await writer.push(Buffer.alloc(4, 2));
    await turns(3);
    assert.deepEqual(writes, [Buffer.concat([Buffer.alloc(5, 1), Buffer.alloc(4, 2)])]);
  });

  it("flush() writes what lingers without waiting", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const { writer, writes } = lingering();
    await writer.push(Buffer.from([7]));
    await writer.flush();
    assert.deepEqual(writes, [Buffer.from([7])]);
  });

  it("discard() drops what lingers and writes nothing more", async (t) => {
    t.mock.timers.enable({ apis: ["setTimeout"] });
    const { writer, writes } = lingering();
    await writer.push(Buffer.from([7]));
    writer.discard();
    t.mock.timers.tick(100);
    await turns(3);
    await writer.push(Buffer.alloc(16));
    await writer.flush();
    assert.deepEqual(writes, []);
  });
});

/** Lets pending promise callbacks and I/O callbacks run `count` times over. */
async function turns(count: number): Promise<void> {
  for (let i = 0; i < count; i++) await new Promise((resolve) => setImmediate(resolve));
}
