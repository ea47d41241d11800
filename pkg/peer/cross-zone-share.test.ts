import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CrossZoneShare, rendezvousSeed, type ZoneSibling } from "./cross-zone-share.js";

const PIECES = 3_000;
const WAIT_MS = 500;

function sibling(agentId: string, grewAtMs = 0): ZoneSibling {
  return { seed: rendezvousSeed(agentId), grewAtMs };
}

/** Each agent's share as it computes it, given the other agents as its siblings. */
function shares(agents: readonly string[], pieces = PIECES): Set<number>[] {
  return agents.map((self) => {
    const share = new CrossZoneShare(pieces, self, WAIT_MS);
    share.setSiblings(agents.filter((a) => a !== self).map((a) => sibling(a)));
    const own = new Set<number>();
    for (let i = 0; i < pieces; i++) if (share.mayFetch(i, 1_000, false)) own.add(i);
    return own;
  });
}

describe("CrossZoneShare", () => {
  it("splits the pieces among a zone's agents: each piece is exactly one agent's, in about equal parts", () => {
    const agents = ["agent-1f3a", "agent-77c0", "agent-b912"];
    const split = shares(agents);
    for (let i = 0; i < PIECES; i++) assert.equal(split.filter((s) => s.has(i)).length, 1, `piece ${i} has one owner`);
    for (const own of split) assert.ok(own.size > PIECES / 3 - 200 && own.size < PIECES / 3 + 200, `a share of ${own.size} pieces`);
  });

  it("an agent joining takes pieces only from the others' shares, never moves pieces between them", () => {
    const before = shares(["a-1", "a-2"]);
    const after = shares(["a-1", "a-2", "a-3"]);
    for (const k of [0, 1]) for (const i of after[k] ?? []) assert.ok(before[k]?.has(i), `piece ${i} stayed with agent ${k}`);
    assert.ok((after[2]?.size ?? 0) > 0);
  });

  it("without siblings or without its own id an agent fetches every piece itself", () => {
    const alone = new CrossZoneShare(10, "solo", WAIT_MS);
    const anonymous = new CrossZoneShare(10, undefined, WAIT_MS);
    anonymous.setSiblings([sibling("other")]);
    for (let i = 0; i < 10; i++) {
      assert.equal(alone.mayFetch(i, 1, false), true);
      assert.equal(anonymous.mayFetch(i, 1, false), true);
    }
  });

  it("a sibling's piece is fetched anyway once it has been available elsewhere for the grace period and the sibling gained nothing", () => {
    const share = new CrossZoneShare(64, "me", WAIT_MS);
    share.setSiblings([sibling("sibling", 1_000)]);
    const theirs = Array.from({ length: 64 }, (_, i) => i).find((i) => !share.mayFetch(i, 1_000, false));
    assert.ok(theirs !== undefined, "the sibling has a share");
    // Still arriving in the other zone (a relay): the grace period has not started.
    assert.equal(share.mayFetch(theirs, 5_000, false), false);
    assert.equal(share.mayFetch(theirs, 10_000, true), false, "available now: the sibling gets its grace period");
    assert.equal(share.mayFetch(theirs, 10_000 + WAIT_MS - 1, true), false);
    assert.equal(share.mayFetch(theirs, 10_000 + WAIT_MS, true), true);
    assert.equal(share.mayFetch(theirs, 10_000 + WAIT_MS, false), true, "once due, also as a relay");
  });

  it("a sibling that keeps gaining pieces is waited for however long its share takes", () => {
    const share = new CrossZoneShare(64, "me", WAIT_MS);
    share.setSiblings([sibling("busy", 0)]);
    const theirs = Array.from({ length: 64 }, (_, i) => i).find((i) => !share.mayFetch(i, 0, false));
    assert.ok(theirs !== undefined);
    assert.equal(share.mayFetch(theirs, 1_000, true), false);
    share.setSiblings([sibling("busy", 5_000)]);
    assert.equal(share.mayFetch(theirs, 5_000 + WAIT_MS - 1, true), false, "it gained a piece recently");
    assert.equal(share.mayFetch(theirs, 5_000 + WAIT_MS, true), true, "it gained nothing for the grace period");
  });
});
