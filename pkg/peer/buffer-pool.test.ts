import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { BufferPool } from "./buffer-pool.js";

const KiB = 1024;

describe("BufferPool", () => {
  it("reuses given-back buffers by size and keeps at most maxIdleBytes idle", () => {
    const pool = new BufferPool({ maxIdleBytes: 2 * 64 * KiB });
    const [a, b, c] = [pool.take(64 * KiB), pool.take(64 * KiB), pool.take(64 * KiB)];
    assert.equal(pool.lentBytes, 3 * 64 * KiB);
    for (const buffer of [a, b, c]) pool.give(buffer);
    assert.equal(pool.lentBytes, 0);
    assert.equal(pool.idleBytes, 2 * 64 * KiB, "the third buffer is dropped");
    const again = pool.take(64 * KiB);
    assert.ok(again === b || again === a, "a pooled buffer comes back");
    assert.notEqual(pool.take(32 * KiB).byteLength, 64 * KiB, "a buffer of another size is never handed out for this one");
  });

  it("drops its idle buffers once nothing was taken for idleReleaseMs", async () => {
    const pool = new BufferPool({ maxIdleBytes: 1024 * KiB, idleReleaseMs: 1 });
    pool.give(pool.take(64 * KiB));
    assert.equal(pool.idleBytes, 64 * KiB);
    for (let i = 0; i < 200 && pool.idleBytes > 0; i++) await sleep(5);
    assert.equal(pool.idleBytes, 0);
  });
});
