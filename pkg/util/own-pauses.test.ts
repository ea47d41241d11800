import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import { OwnPauses, PAUSE_TICK_MS } from "./own-pauses.js";

/** Blocks this thread for `ms`: no timer runs meanwhile. */
function block(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

describe("OwnPauses", () => {
  it("counts the time this process did not run, not the time it waited, and starts again on reset", async () => {
    const pauses = new OwnPauses(10_000);
    try {
      await sleep(3 * PAUSE_TICK_MS);
      assert.ok(pauses.ms() < 50, `waiting is not a pause (${pauses.ms()} ms)`);
      block(400);
      // Read at once, before the heartbeat ran again: the pause in progress counts.
      assert.ok(pauses.ms() >= 300, `a 400 ms block counts (${pauses.ms()} ms)`);
      await sleep(2 * PAUSE_TICK_MS);
      const counted = pauses.ms();
      assert.ok(counted >= 300 && counted < 600, `counted once (${counted} ms)`);
      pauses.reset();
      assert.ok(pauses.ms() < 50);
    } finally {
      pauses.close();
    }
  });

  it("discounts at most its bound per silence", async () => {
    const pauses = new OwnPauses(100);
    try {
      block(400);
      await sleep(PAUSE_TICK_MS);
      assert.equal(pauses.ms(), 100);
    } finally {
      pauses.close();
    }
  });
});
