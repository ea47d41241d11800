import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AnnounceGate } from "./announce-gate.js";

describe("AnnounceGate", () => {
  it("lets a burst through, then pauses senders in order and resumes them as the rate refills", () => {
    const clock = { now: 0 };
    const gate = new AnnounceGate({ perSecond: 1_000, burst: 10, now: () => clock.now });
    const resumed: string[] = [];
    for (let i = 0; i < 10; i++)
      assert.equal(
        gate.take(() => resumed.push("never")),
        true,
        `announce ${i} is within the burst`,
      );
    assert.equal(
      gate.take(() => resumed.push("a")),
      false,
      "the 11th pauses its session",
    );
    assert.equal(
      gate.take(() => resumed.push("b")),
      false,
    );
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
    for (let i = 0; i < 100_000; i++)
      assert.equal(
        open.take(() => undefined),
        true,
      );
    const clock = { now: 0 };
    const gate = new AnnounceGate({ perSecond: 10, burst: 1, now: () => clock.now });
    let resumed = 0;
    gate.take(() => resumed++);
    assert.equal(
      gate.take(() => resumed++),
      false,
    );
    gate.close();
    assert.equal(resumed, 1);
    assert.equal(
      gate.take(() => resumed++),
      true,
      "closed: never pauses again",
    );
    assert.throws(() => new AnnounceGate({ perSecond: -1 }), RangeError);
  });
});

describe("AnnounceGate adapting to the event loop's delay", () => {
  it("halves the rate while its ticks run late, down to the floor, and grows it back when they run on time", async () => {
    const { ADAPT_INTERVAL_MS, ANNOUNCE_GATE_TICK_MS, MIN_ANNOUNCES_PER_SECOND } = await import("./announce-gate.js");
    const clock = { now: 0 };
    const gate = new AnnounceGate({ perSecond: 8_000, burst: 1, now: () => clock.now });
    gate.take(() => undefined);
    gate.take(() => undefined); // someone waits: ticks run
    /** Ticks through one adaptation interval, each `lateMs` late. */
    const interval = (lateMs: number): void => {
      const ticks = Math.ceil(ADAPT_INTERVAL_MS / (ANNOUNCE_GATE_TICK_MS + lateMs));
      for (let i = 0; i < ticks; i++) {
        clock.now += ANNOUNCE_GATE_TICK_MS + lateMs;
        gate.tick();
        // More arrive than a tick resumes: sessions stay paused and the gate's timer keeps running.
        for (let k = 0; k < 3; k++) gate.take(() => undefined);
      }
    };
    gate.tick();
    interval(200);
    interval(200);
    assert.ok(gate.rate <= 4_000, `late ticks halve the rate (${gate.rate})`);
    for (let i = 0; i < 12; i++) interval(200);
    assert.equal(gate.rate, MIN_ANNOUNCES_PER_SECOND, "never below the floor");
    interval(60);
    interval(60);
    assert.equal(gate.rate, MIN_ANNOUNCES_PER_SECOND, "between the marks: unchanged");
    for (let i = 0; i < 40; i++) interval(0);
    assert.equal(gate.rate, 8_000, "on time: back to the configured rate, never above it");
    const fixed = new AnnounceGate({ perSecond: 8_000, burst: 1, now: () => clock.now, adaptive: false });
    fixed.take(() => undefined);
    for (let i = 0; i < 10; i++) {
      clock.now += 1_000;
      fixed.tick();
    }
    assert.equal(fixed.rate, 8_000);
    gate.close();
    fixed.close();
  });
});
