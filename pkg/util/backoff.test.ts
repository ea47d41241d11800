import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Backoff } from "./backoff.js";

describe("Backoff", () => {
  it("grows by the multiplier up to the cap, jitters within bounds and resets", () => {
    const fixed = new Backoff({ initialDelayMs: 100, maxDelayMs: 300, multiplier: 2, jitter: 0.2, random: () => 0.5 });
    assert.deepEqual([fixed.next(), fixed.next(), fixed.next(), fixed.next()], [100, 200, 300, 300]);
    fixed.reset();
    assert.equal(fixed.next(), 100);
    const low = new Backoff({ initialDelayMs: 100, jitter: 0.2, random: () => 0 });
    const high = new Backoff({ initialDelayMs: 100, jitter: 0.2, random: () => 0.999999 });
    assert.equal(low.next(), 80);
    assert.equal(high.next(), 120);
  });
});
