import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";
import { StartDeadline } from "./start-deadline.js";

/** Blocks this thread for `ms`: no timer and no I/O runs meanwhile. */
function block(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Waits until `signal` aborts (at most `ms`); returns when, or undefined. */
async function abortedWithin(signal: AbortSignal, ms: number): Promise<number | undefined> {
  const start = performance.now();
  while (!signal.aborted && performance.now() - start < ms) await sleep(10);
  return signal.aborted ? performance.now() - start : undefined;
}

describe("StartDeadline", () => {
  it("runs out after its timeout, later after progress, and never after its limit", async () => {
    const plain = new StartDeadline(150, 450);
    const moved = new StartDeadline(150, 450);
    try {
      await sleep(100);
      moved.progress();
      assert.ok((await abortedWithin(plain.signal, 1_000)) !== undefined);
      assert.equal(moved.signal.aborted, false, "progress moved it");
      assert.match((plain.signal.reason as Error).message, /within 150 ms$/);
      const progressing = setInterval(() => {
        moved.progress();
      }, 50);
      try {
        assert.ok((await abortedWithin(moved.signal, 1_000)) !== undefined, "the limit holds however much progress comes");
      } finally {
        clearInterval(progressing);
      }
      assert.match((moved.signal.reason as Error).message, /last sign that one was under way/);
    } finally {
      plain.dispose();
      moved.dispose();
    }
  });

  it("does not count time this process did not run", async () => {
    const deadline = new StartDeadline(300, 900);
    try {
      block(400);
      // The deadline's timer is overdue, but the process was stopped for most of it: a source could not be heard.
      await sleep(0);
      assert.equal(deadline.signal.aborted, false);
      // It runs out once the process has run for its timeout.
      assert.ok((await abortedWithin(deadline.signal, 2_000)) !== undefined);
    } finally {
      deadline.dispose();
    }
  });
});
