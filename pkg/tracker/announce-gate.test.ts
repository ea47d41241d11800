import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AnnounceGate } from "./announce-gate.js";

describe("AnnounceGate", () => {
  it("lets a burst through, then pauses senders in order and resumes them as the rate refills", () => {
    const clock = { now: 0 };
    const gate = new AnnounceGate({ perSecond: 1_000, burst: 10, now: () => clock.now });
    const resumed: string[] = [];
    for (let i = 0; i < 10; i++) assert.equal(gate.take(() => resumed.push("never")), true, `announce ${i} is within the burst`);
    assert.equal(gate.take(() => resumed.push("a")), false, "the 11th pauses its session");
    assert.equal(gate.take(() => resumed.push("b")), false);
    assert.equal(gate.paused, 2);
    gate.tick();
    assert.equal(resumed.length, 0, "no time passed: nobody resumes");
    clock.now += 5; // +5 tokens, 2 owed: 3 left, enough for one session's buffered messages
    gate.tick();
    assert.deepEqual(resumed, ["a"]);
    clock.now += 20;
    gate.tick();
    assert.deepEqual(resumed, ["a", "b"]);
    assert.equal(gate.paused, 0);
    gate.close();
  });

  it("0 per second is ungated; close resumes everyone", () => {
    const open = new AnnounceGate({ perSecond: 0 });
    for (let i = 0; i < 100_000; i++) assert.equal(open.take(() => undefined), true);
    const clock = { now: 0 };
    const gate = new AnnounceGate({ perSecond: 10, burst: 1, now: () => clock.now });
    let resumed = 0;
    gate.take(() => resumed++);
    assert.equal(gate.take(() => resumed++), false);
    gate.close();
    assert.equal(resumed, 1);
    assert.equal(gate.take(() => resumed++), true, "closed: never pauses again");
    assert.throws(() => new AnnounceGate({ perSecond: -1 }), RangeError);
  });
});

describe("AnnounceGate adapting to the event loop", () => {
  it("halves the rate while the loop is busy, down to the floor, and grows it back when there is room", async () => {
    const { ADAPT_INTERVAL_MS, MIN_ANNOUNCES_PER_SECOND } = await import("./announce-gate.js");
    const clock = { now: 0 };
    let load = 0.95;
    const gate = new AnnounceGate({ perSecond: 8_000, burst: 10, now: () => clock.now, load: () => load });
    const step = (): void => {
      clock.now += ADAPT_INTERVAL_MS;
      gate.take(() => undefined);
    };
    step();
    assert.equal(gate.rate, 4_000);
    for (let i = 0; i < 10; i++) step();
    assert.equal(gate.rate, MIN_ANNOUNCES_PER_SECOND, "never below the floor");
    load = 0.7;
    step();
    assert.equal(gate.rate, MIN_ANNOUNCES_PER_SECOND, "between the marks: unchanged");
    load = 0.1;
    for (let i = 0; i < 30; i++) step();
    assert.equal(gate.rate, 8_000, "back to the configured rate, never above it");
    gate.close();
  });
});
