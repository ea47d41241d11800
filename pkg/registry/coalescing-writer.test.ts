import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import { CoalescingWriter } from "./coalescing-writer.js";

describe("CoalescingWriter", () => {
  it("writes everything in order, batching chunks that arrive during a write", async () => {
    const writes: Buffer[] = [];
    const writer = new CoalescingWriter(async (data) => {
      writes.push(data);
      await sleep(5);
    });
    for (let i = 0; i < 20; i++) await writer.push(Buffer.from([i]));
    await writer.flush();
    assert.deepEqual(Buffer.concat(writes), Buffer.from(Array.from({ length: 20 }, (_, i) => i)));
    assert.ok(writes.length < 20, `expected fewer writes than chunks, got ${writes.length}`);
    assert.equal(writes[0]?.length, 1, "the first chunk is written at once, not held back");
  });

  it("makes the producer wait past the queue limit", async () => {
    let release: () => void = () => undefined;
    const writer = new CoalescingWriter(
      () =>
        new Promise<void>((resolve) => {
          release = resolve;
        }),
      10,
    );
    await writer.push(Buffer.alloc(4));
    await writer.push(Buffer.alloc(4));
    let waited = true;
    const blocked = writer.push(Buffer.alloc(8)).then(() => (waited = false));
    await sleep(10);
    assert.equal(waited, true, "push over the limit waits for the write in flight");
    release();
    await sleep(1);
    release();
    await blocked;
    release();
    await writer.flush();
  });

  it("reports a write error to the producer", async () => {
    const writer = new CoalescingWriter(() => Promise.reject(new Error("disk full")));
    await writer.push(Buffer.alloc(1));
    await assert.rejects(writer.flush(), /disk full/);
    await assert.rejects(writer.push(Buffer.alloc(1)), /disk full/);
  });
});
