import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { GrantHoldoff } from "./grant-holdoff.js";
import { advertisedAddress, leaderAnnotationValue, leaderFromAnnotation } from "./leader-address.js";

function clocked(expected: number): { holdoff: GrantHoldoff; clock: { now: number }; agents: { registered: number } } {
  const clock = { now: 1_000 };
  const agents = { registered: 0 };
  const holdoff = new GrantHoldoff({
    expectedAgents: () => expected,
    registeredAgents: () => agents.registered,
    maxMs: 1_500,
    settleMs: 200,
    now: () => clock.now,
  });
  return { holdoff, clock, agents };
}

describe("grant hold-off of a new leader", () => {
  it("allows grants before leading", () => {
    assert.equal(clocked(3).holdoff.allowed(), true);
  });

  it("holds grants until every expected agent registered, then for the settle time", () => {
    const { holdoff, clock, agents } = clocked(3);
    holdoff.start();
    assert.equal(holdoff.allowed(), false);
    agents.registered = 2;
    clock.now += 500;
    assert.equal(holdoff.allowed(), false, "one agent still missing");
    agents.registered = 3;
    assert.equal(holdoff.allowed(), false, "inventories still arriving");
    clock.now += 199;
    assert.equal(holdoff.allowed(), false);
    clock.now += 1;
    assert.equal(holdoff.allowed(), true);
  });

  it("ends after the maximum when agents never all come back", () => {
    const { holdoff, clock, agents } = clocked(3);
    holdoff.start();
    agents.registered = 1;
    clock.now += 1_499;
    assert.equal(holdoff.allowed(), false);
    clock.now += 1;
    assert.equal(holdoff.allowed(), true);
  });

  it("with no agent Pods, settles at once and a new term holds again", () => {
    const { holdoff, clock } = clocked(0);
    holdoff.start();
    assert.equal(holdoff.allowed(), false);
    clock.now += 200;
    assert.equal(holdoff.allowed(), true);
    holdoff.start();
    assert.equal(holdoff.allowed(), false);
  });
});

describe("leader address on the Lease", () => {
  it("advertises IP:port, nothing for unspecified hosts, and refuses names", () => {
    assert.equal(advertisedAddress("10.1.2.3", 7000), "10.1.2.3:7000");
    assert.equal(advertisedAddress("fd00::1", 7000), "[fd00::1]:7000");
    assert.equal(advertisedAddress("0.0.0.0", 7000), undefined);
    assert.equal(advertisedAddress("::", 7000), undefined);
    assert.throws(() => advertisedAddress("controller.example", 7000), /must be an IP address/);
  });

  it("uses the note only when the Lease's holder wrote it and it is well formed", () => {
    const note = leaderAnnotationValue("controller-a", "10.1.2.3:7000");
    assert.equal(leaderFromAnnotation(note, "controller-a"), "10.1.2.3:7000");
    assert.equal(leaderFromAnnotation(note, "controller-b"), undefined, "left by a previous holder");
    assert.equal(leaderFromAnnotation(note, ""), undefined, "released");
    assert.equal(leaderFromAnnotation(undefined, "controller-a"), undefined);
    assert.equal(leaderFromAnnotation("{not json", "controller-a"), undefined);
    assert.equal(leaderFromAnnotation(JSON.stringify({ holder: "controller-a", address: "evil.example:7000" }), "controller-a"), undefined);
    assert.equal(leaderFromAnnotation(JSON.stringify(["controller-a"]), "controller-a"), undefined);
  });
});
