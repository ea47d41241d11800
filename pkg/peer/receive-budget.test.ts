import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { MIN_PIECES_PER_DOWNLOAD, RATE_WINDOW_MS, ReceiveBudget } from "./receive-budget.js";

const MiB = 1024 * 1024;
const TUNING = { receiveWaitMs: 2_000, minReceiveBytes: 8 * MiB, maxReceiveBytes: 64 * MiB };

describe("ReceiveBudget", () => {
  it("follows the receive rate: rate times the target wait, within its floor and ceiling", () => {
    const budget = new ReceiveBudget(TUNING);
    assert.equal(budget.limit(0), 8 * MiB, "nothing received yet: the floor");
    // 4 MiB per 250 ms for a whole window: 16 MiB/s, so 32 MiB in 2 s.
    for (let t = 0; t < RATE_WINDOW_MS; t += 250) budget.received(4 * MiB, t);
    assert.equal(budget.rate(RATE_WINDOW_MS - 1), 16 * MiB);
    assert.equal(budget.limit(RATE_WINDOW_MS - 1), 32 * MiB);
    // A busy machine: 1 MiB per 250 ms (4 MiB/s) for the next window; the old bytes leave the window.
    for (let t = RATE_WINDOW_MS; t < 2 * RATE_WINDOW_MS; t += 250) budget.received(MiB, t);
    assert.equal(budget.limit(2 * RATE_WINDOW_MS - 1), 8 * MiB, "4 MiB/s × 2 s = 8 MiB");
    for (let t = 2 * RATE_WINDOW_MS; t < 3 * RATE_WINDOW_MS; t += 250) budget.received(20 * MiB, t);
    assert.equal(budget.limit(3 * RATE_WINDOW_MS - 1), 64 * MiB, "the ceiling");
    assert.equal(budget.limit(10 * RATE_WINDOW_MS), 8 * MiB, "nothing for a while: back to the floor");
  });

  it("counts what every download has asked for, and a download that leaves gives its part back", () => {
    const budget = new ReceiveBudget(TUNING);
    const a = budget.join(MiB, () => undefined);
    const b = budget.join(MiB, () => undefined);
    a.take(3);
    b.take(2);
    a.give(1);
    assert.equal(budget.requested, 4 * MiB);
    a.leave();
    assert.equal(budget.requested, 2 * MiB);
    assert.equal(a.bytes, 0);
  });

  it("shares the budget: an equal part for each download that wants more, what satisfied ones hold left aside", () => {
    const budget = new ReceiveBudget(TUNING); // 8 MiB: the floor
    const a = budget.join(MiB, () => undefined);
    const b = budget.join(MiB, () => undefined);
    a.hungry = true;
    assert.equal(b.room(0), 4, "b and a want more: 4 MiB each");
    a.take(4);
    b.hungry = true;
    assert.equal(a.room(0), 0, "a holds its part");
    assert.equal(b.room(0), 4);
    b.take(4);
    // a is satisfied with 1 MiB in flight (it has nothing more to ask for): b may have the rest.
    a.give(3);
    a.hungry = false;
    assert.equal(b.room(0), 3, "8 MiB less a's 1 MiB, less b's 4 MiB asked already");
  });

  it("never starves a download: each may keep MIN_PIECES_PER_DOWNLOAD pieces asked for, beyond the budget", () => {
    const budget = new ReceiveBudget(TUNING);
    const greedy = budget.join(MiB, () => undefined);
    greedy.take(8);
    greedy.hungry = true;
    const late = budget.join(4 * MiB, () => undefined);
    assert.equal(late.room(0), MIN_PIECES_PER_DOWNLOAD, "4 MiB pieces: two, though the budget is spent");
    late.take(MIN_PIECES_PER_DOWNLOAD);
    assert.equal(late.room(0), 0);
  });

  it("wakes a download that wanted more when another gives room back, not one that is satisfied", () => {
    const budget = new ReceiveBudget(TUNING);
    let wokenHungry = 0;
    let wokenSatisfied = 0;
    const giver = budget.join(MiB, () => undefined);
    const hungry = budget.join(MiB, () => {
      wokenHungry++;
    });
    const satisfied = budget.join(MiB, () => {
      wokenSatisfied++;
    });
    hungry.hungry = true;
    giver.take(2);
    giver.give(1);
    giver.leave();
    assert.equal(wokenHungry, 2);
    assert.equal(wokenSatisfied, 0);
    assert.equal(satisfied.bytes, 0);
  });
});
