import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { PieceBitmap } from "../piece/index.js";
import { rendezvousSeed } from "./cross-zone-share.js";
import { MAX_PARKED_PIECES, PiecePicker, type PickerState, type PickerTuning, type PlannedRequest } from "./piece-picker.js";
import { RequestBook } from "./request-book.js";
import type { SwarmPeer } from "./swarm-peers.js";
import { SMALL_READ_BYTES } from "./upload-slots.js";

const TUNING: PickerTuning = {
  maxInflightPerPeer: 4,
  piecesPerRequest: 2,
  inOrderWindow: 2,
  relayAhead: 2,
  relayWaitMs: 3_000,
  hedgeAfterMs: 3_000,
  endgamePieces: 4,
  endgameSilenceMs: 500,
  siblingWaitMs: 1_500,
};

/** A peer holding `held` (or everything), in zone `zone` as this agent sees it. */
function peer(
  agentId: string,
  held: readonly number[] | "all",
  options: { pieces?: number; local?: boolean; zone?: string; grewAtMs?: number; dataAtMs?: number } = {},
): SwarmPeer {
  const pieces = options.pieces ?? 8;
  const bitmap = held === "all" ? undefined : new PieceBitmap(pieces);
  if (held !== "all") for (const i of held) bitmap?.set(i);
  return {
    agentId,
    seed: rendezvousSeed(agentId),
    address: `${agentId}:1`,
    zone: options.zone ?? "",
    local: options.local ?? true,
    rank: 0,
    complete: held === "all",
    bitmap,
    grewAtMs: options.grewAtMs ?? 0,
    dataAtMs: options.dataAtMs ?? Number.NEGATIVE_INFINITY,
    inflight: 0,
    failures: 0,
    excludedUntilMs: 0,
    busyUntilMs: Number.NEGATIVE_INFINITY,
    busySinceMs: Number.NEGATIVE_INFINITY,
    badPieces: false,
  };
}

interface Scenario {
  readonly pieces?: number;
  readonly held?: readonly number[];
  readonly peers: readonly SwarmPeer[];
  /** Peers that refused a call as busy a moment ago (PickerState.busy). */
  readonly busy?: readonly SwarmPeer[];
  readonly nowMs?: number;
  readonly granteeAgentId?: string;
  readonly book?: RequestBook;
  readonly tuning?: Partial<PickerTuning>;
  readonly selfAgentId?: string;
  /** PiecePickerOptions.blobBytes. */
  readonly blobBytes?: number;
  readonly zone?: string;
  /** Tie-break: a fixed sequence makes the shuffle the identity (random() = 0.999…). */
  readonly random?: () => number;
  /** PickerState.patienceMs (the silence thresholds stretched on a busy machine); none: the bases. */
  readonly patienceMs?: (baseMs: number) => number;
  /** PickerState.maxPieces (the download's part of the receive budget); none: unlimited. */
  readonly maxPieces?: number;
}

/** The identity shuffle: Fisher–Yates with random() just below 1 swaps every index with itself. */
const IDENTITY = (): number => 0.999_999;

function plan(s: Scenario): PlannedRequest[] {
  return planWith(s).planned;
}

function planWith(s: Scenario): { planned: PlannedRequest[]; capped: boolean } {
  const pieces = s.pieces ?? 8;
  const picker = new PiecePicker({
    pieceCount: pieces,
    selfAgentId: s.selfAgentId,
    blobBytes: s.blobBytes,
    zone: s.zone ?? "",
    tuning: { ...TUNING, ...s.tuning },
    random: s.random ?? IDENTITY,
  });
  const book = s.book ?? new RequestBook();
  const held = new Set(s.held ?? []);
  const state: PickerState = {
    nowMs: s.nowMs ?? 10_000,
    held: (i) => held.has(i),
    parked: () => false,
    parkedCount: 0,
    peers: s.peers,
    busy: s.busy ?? [],
    granteeAgentId: s.granteeAgentId,
    requestsFor: (i) => book.requestsFor(i),
    ...(s.patienceMs === undefined ? {} : { patienceMs: s.patienceMs }),
    ...(s.maxPieces === undefined ? {} : { maxPieces: s.maxPieces }),
  };
  const planned = picker.plan(state);
  return { planned, capped: picker.capped };
}

/** PiecePicker.suppliers for a scenario: the peers (usable or busy) holding a piece this agent misses. */
function suppliers(s: Scenario): number {
  const pieces = s.pieces ?? 8;
  const picker = new PiecePicker({ pieceCount: pieces, selfAgentId: undefined, zone: "", tuning: TUNING, random: IDENTITY });
  const held = new Set(s.held ?? []);
  return picker.suppliers({
    nowMs: 10_000,
    held: (i) => held.has(i),
    parked: () => false,
    parkedCount: 0,
    peers: s.peers,
    busy: s.busy ?? [],
    granteeAgentId: undefined,
    requestsFor: () => [],
  });
}

function summary(planned: readonly PlannedRequest[]): string[] {
  return planned.map((p) => `${p.peer.agentId}:${p.pieces.join(",")}${p.waitMs > 0 ? " relay" : ""}`);
}

describe("PiecePicker.suppliers", () => {
  it("counts complete holders and partial holders of a missing piece, busy ones too, and none once all is held", () => {
    const complete = peer("complete", "all");
    const onlyHeld = peer("only-held", [0, 1, 2]);
    const hasLast = peer("has-last", [0, 7]);
    const busyMiddle = peer("busy-middle", [5]);
    assert.equal(suppliers({ held: [0, 1, 2], peers: [complete, onlyHeld, hasLast], busy: [busyMiddle] }), 3);
    assert.equal(suppliers({ held: [0, 1, 2], peers: [onlyHeld] }), 0, "a holder of only what this agent has supplies nothing");
    assert.equal(suppliers({ held: [0, 1, 2, 3, 4, 5, 6, 7], peers: [complete, hasLast] }), 0, "nothing is missing");
    assert.equal(suppliers({ held: [1, 2, 3, 4, 5, 6, 7], peers: [hasLast] }), 1, "the first piece missing counts");
  });
});

describe("PiecePicker", () => {
  const cases: { name: string; scenario: Scenario; expected: string[] }[] = [
    {
      name: "rarest first: pieces one holder has before pieces two have",
      scenario: {
        peers: [peer("b", [0, 1, 2, 3, 4, 5]), peer("c", [2, 3, 4, 5, 6, 7])],
        tuning: { maxInflightPerPeer: 2, inOrderWindow: 0 },
      },
      expected: ["b:0,1", "c:6,7"],
    },
    {
      name: "without an in-order window the rarest piece (6, one holder) goes first",
      scenario: {
        peers: [peer("b", [0, 1, 2, 3, 4, 5, 6, 7]), peer("c", [0, 1, 2, 3, 4, 5, 7])],
        tuning: { maxInflightPerPeer: 2, inOrderWindow: 0 },
      },
      expected: ["b:6,0", "c:1,2"],
    },
    {
      name: "the in-order window (0, 1) comes before the rarer piece 6",
      scenario: {
        peers: [peer("b", [0, 1, 2, 3, 4, 5, 6, 7]), peer("c", [0, 1, 2, 3, 4, 5, 7])],
        tuning: { maxInflightPerPeer: 2, inOrderWindow: 2 },
      },
      expected: ["b:0,1", "c:2,3"],
    },
    {
      name: "a complete holder (a seed) gives only what no downloader holds; downloaders give the rest",
      scenario: {
        peers: [peer("a", "all"), peer("b", [0, 1, 2, 3, 4, 5]), peer("c", [2, 3, 4, 5])],
        tuning: { maxInflightPerPeer: 2 },
      },
      expected: ["a:6,7", "b:0,1", "c:2,3"],
    },
    {
      name: "rarest first across peers once the window is taken",
      scenario: { held: [0, 1], peers: [peer("b", [2, 3, 4, 5]), peer("a", "all")], tuning: { maxInflightPerPeer: 2 } },
      // Window 2,3 from the first peer; a then takes the rarest it holds: 6,7.
      expected: ["b:2,3", "a:6,7"],
    },
    {
      name: "a partial holder is asked for the pieces just past its prefix (relay)",
      scenario: {
        pieces: 8,
        held: [0, 1, 2, 3, 4, 5, 6, 7].filter((i) => i < 2),
        peers: [peer("p", [0, 1, 2])],
        tuning: { maxInflightPerPeer: 4 },
      },
      expected: ["p:2", "p:3,4 relay"],
    },
    {
      name: "nothing when every piece is held",
      scenario: { held: [0, 1, 2, 3, 4, 5, 6, 7], peers: [peer("a", "all")] },
      expected: [],
    },
    {
      name: "a peer's in-flight pieces count against its room",
      scenario: { peers: [{ ...peer("a", "all"), inflight: 3 }] },
      expected: ["a:0"],
    },
    {
      name: "without a budget each peer in rank order takes batches up to its room",
      scenario: { peers: [peer("b", [0, 1, 2, 3, 4, 5, 6, 7]), peer("c", [0, 1, 2, 3, 4, 5, 6, 7])], tuning: { inOrderWindow: 8 } },
      // Round by round: b, c, b, c.
      expected: ["b:0,1", "c:2,3", "b:4,5", "c:6,7"],
    },
    {
      name: "a budget of 3 pieces is spread over the peers a batch at a time, and the last batch is cut to fit",
      scenario: {
        peers: [peer("b", [0, 1, 2, 3, 4, 5, 6, 7]), peer("c", [0, 1, 2, 3, 4, 5, 6, 7])],
        tuning: { inOrderWindow: 8 },
        maxPieces: 3,
      },
      expected: ["b:0,1", "c:2"],
    },
    {
      name: "a budget of nothing plans nothing",
      scenario: { peers: [peer("a", "all")], maxPieces: 0 },
      expected: [],
    },
  ];
  for (const { name, scenario, expected } of cases) {
    it(name, () => {
      assert.deepEqual(summary(plan(scenario)), expected);
    });
  }

  it("says it was capped only when the budget, not the peers or the pieces, ended the plan", () => {
    const both = [peer("b", [0, 1, 2, 3, 4, 5, 6, 7]), peer("c", [0, 1, 2, 3, 4, 5, 6, 7])];
    assert.equal(planWith({ peers: both, maxPieces: 3 }).capped, true, "peers had room for more");
    assert.equal(planWith({ peers: both, maxPieces: 0 }).capped, true, "no room at all");
    assert.equal(planWith({ peers: both, maxPieces: 100 }).capped, false, "the peers' room ended it");
    assert.equal(planWith({ peers: both }).capped, false, "no budget");
    assert.equal(planWith({ held: [0, 1, 2, 3, 4, 5, 6], peers: both, maxPieces: 3 }).capped, false, "one piece was all it wanted");
  });

  it("the tie-break among equally rare pieces comes from the random source", () => {
    const peers = (): SwarmPeer[] => [peer("a", "all")];
    const firsts = new Set<string>();
    let seed = 1;
    for (let run = 0; run < 8; run++) {
      seed = (seed * 48_271) % 2_147_483_647;
      let state = seed;
      const random = (): number => {
        state = (state * 48_271) % 2_147_483_647;
        return state / 2_147_483_647;
      };
      const planned = plan({
        pieces: 64,
        held: [0, 1],
        peers: peers(),
        tuning: { maxInflightPerPeer: 2, piecesPerRequest: 2, inOrderWindow: 0 },
        random,
      });
      firsts.add(planned[0]?.pieces.join(",") ?? "");
    }
    assert.ok(firsts.size > 1, "different random sources pick different pieces first");
    const again = (): string[] =>
      summary(plan({ pieces: 64, held: [0, 1], peers: peers(), tuning: { inOrderWindow: 0 }, random: IDENTITY }));
    assert.deepEqual(again(), again(), "the same source, the same plan");
  });

  it("zones: a piece only another zone holds is fetched there only if it is this agent's share", () => {
    const self = "agent-self";
    const sibling = peer("agent-sibling", [], { zone: "a", local: true, grewAtMs: 10_000 });
    const remote = peer("agent-remote", "all", { zone: "b", local: false });
    const planned = plan({
      pieces: 64,
      zone: "a",
      selfAgentId: self,
      peers: [sibling, remote],
      tuning: { maxInflightPerPeer: 64, piecesPerRequest: 64, inOrderWindow: 0 },
    });
    const fromRemote = planned.filter((p) => p.peer === remote).flatMap((p) => p.pieces);
    assert.ok(fromRemote.length > 10 && fromRemote.length < 54, `about half across zones, got ${fromRemote.length}`);
    // The sibling takes the rest: here they are asked of the sibling as relays (its share, arriving there).
    const alone = plan({
      pieces: 64,
      zone: "a",
      selfAgentId: self,
      peers: [remote],
      tuning: { maxInflightPerPeer: 64, piecesPerRequest: 64, inOrderWindow: 0 },
    });
    assert.equal(alone.flatMap((p) => p.pieces).length, 64, "without a sibling every piece is this agent's");
  });

  it("zones: a busy same-zone holder keeps its pieces in the zone, and a busy sibling keeps its share", () => {
    const self = "agent-self";
    const tuning = { maxInflightPerPeer: 64, piecesPerRequest: 64, inOrderWindow: 0 };
    const localSeed = peer("agent-local-seed", "all", { pieces: 64, zone: "a", local: true });
    const remote = peer("agent-remote", "all", { pieces: 64, zone: "b", local: false });
    const fromRemote = (planned: readonly PlannedRequest[]): number[] => planned.filter((p) => p.peer === remote).flatMap((p) => p.pieces);
    // The same-zone seed refused a call a moment ago: nothing is asked of anyone, and nothing crosses zones.
    assert.deepEqual(summary(plan({ pieces: 64, zone: "a", selfAgentId: self, peers: [remote], busy: [localSeed], tuning })), []);
    // Gone (not listed at all), it is replaced by the other zone: every piece is this agent's to fetch there.
    assert.equal(fromRemote(plan({ pieces: 64, zone: "a", selfAgentId: self, peers: [remote], tuning })).length, 64);
    // A busy sibling downloading the blob too keeps its share: this agent fetches only its own across zones.
    const sibling = peer("agent-sibling", [], { pieces: 64, zone: "a", local: true, grewAtMs: 10_000 });
    const withSibling = fromRemote(plan({ pieces: 64, zone: "a", selfAgentId: self, peers: [sibling, remote], tuning }));
    const siblingBusy = fromRemote(plan({ pieces: 64, zone: "a", selfAgentId: self, peers: [remote], busy: [sibling], tuning }));
    assert.ok(withSibling.length > 10 && withSibling.length < 54, `about half across zones, got ${withSibling.length}`);
    assert.deepEqual(siblingBusy, withSibling, "the same share whether the sibling is busy or not");
  });

  it("fan-out: from a seed only this agent's share; the rest from the downloader whose share it is, relayed", () => {
    const self = "agent-self";
    const seedPeer = peer("agent-grantee", [0, 1, 2, 3, 4, 5, 6, 7], { pieces: 8 });
    const downloader = peer("agent-other", [], { pieces: 8, grewAtMs: 10_000 });
    const planned = plan({
      pieces: 8,
      selfAgentId: self,
      granteeAgentId: "agent-grantee",
      peers: [seedPeer, downloader],
      tuning: { maxInflightPerPeer: 8, piecesPerRequest: 8, inOrderWindow: 0 },
    });
    const fromSeed = planned.filter((p) => p.peer === seedPeer).flatMap((p) => p.pieces);
    const relayed = planned.filter((p) => p.peer === downloader && p.waitMs > 0).flatMap((p) => p.pieces);
    assert.equal(fromSeed.length + relayed.length, 8, `every piece planned once: ${summary(planned).join(" ")}`);
    assert.ok(fromSeed.length > 0 && relayed.length > 0, `split between the seed and the downloader: ${summary(planned).join(" ")}`);
  });

  it("hedging and endgame duplicate only requests that stopped receiving bytes", () => {
    const slow = peer("slow", "all");
    const other = peer("other", "all");
    const book = new RequestBook();
    const request = book.add(slow, [6, 7], false, 0);
    const held = [0, 1, 2, 3, 4, 5];
    // Endgame (2 missing, both requested): silent for 400 ms < endgameSilenceMs → no duplicate.
    book.data(request, 1, 9_600);
    assert.deepEqual(summary(plan({ held, peers: [slow, other], book, nowMs: 10_000 })), []);
    // Silent for 600 ms → the endgame duplicates to another peer.
    book.data(request, 1, 9_400);
    assert.deepEqual(summary(plan({ held, peers: [slow, other], book, nowMs: 10_000 })), ["other:6,7"]);
    // Not the endgame (many pieces missing): a silent request is hedged only after hedgeAfterMs.
    const early = new RequestBook();
    const r = early.add(slow, [0, 1], false, 0);
    early.data(r, 1, 8_000);
    assert.ok(
      !plan({ held: [], peers: [other], book: early, nowMs: 10_000, tuning: { maxInflightPerPeer: 8, piecesPerRequest: 8 } }).some((p) =>
        p.pieces.includes(0),
      ),
    );
    early.data(r, 1, 6_000);
    assert.ok(
      plan({ held: [2, 3, 4, 5, 6, 7], peers: [other, slow], book: early, nowMs: 10_000, tuning: { endgamePieces: 0 } }).some((p) =>
        p.pieces.includes(0),
      ),
    );
  });

  it("on a busy machine (calls pausing between bytes) endgame and hedge wait for the stretched silence", () => {
    const slow = peer("slow", "all");
    const other = peer("other", "all");
    const book = new RequestBook();
    const request = book.add(slow, [6, 7], false, 0);
    book.data(request, 1, 9_000);
    const held = [0, 1, 2, 3, 4, 5];
    const stretched = (baseMs: number): number => Math.max(baseMs, 1_800);
    // Silent for 1 s: past endgameSilenceMs (500 ms), not past the stretched 1.8 s.
    assert.deepEqual(summary(plan({ held, peers: [slow, other], book, nowMs: 10_000, patienceMs: stretched })), []);
    assert.deepEqual(summary(plan({ held, peers: [slow, other], book, nowMs: 10_000 })), ["other:6,7"], "unstretched: duplicated");
    assert.deepEqual(summary(plan({ held, peers: [slow, other], book, nowMs: 10_900, patienceMs: stretched })), ["other:6,7"]);
    // A hedge (not the endgame) likewise: hedgeAfterMs 3 s stretched to 4 s.
    const early = new RequestBook();
    const r = early.add(slow, [0, 1], false, 0);
    early.data(r, 1, 6_500);
    const hedge = (nowMs: number): boolean =>
      plan({
        held: [2, 3, 4, 5, 6, 7],
        peers: [other, slow],
        book: early,
        nowMs,
        tuning: { endgamePieces: 0 },
        patienceMs: (baseMs) => Math.max(baseMs, 4_000),
      }).some((p) => p.pieces.includes(0));
    assert.equal(hedge(10_000), false, "silent 3.5 s < 4 s");
    assert.equal(hedge(10_600), true, "silent 4.1 s");
  });

  it("a call queued behind the same peer's sending calls is not hedged; one whose peer went silent is", () => {
    const busy = peer("busy", "all", { zone: "a", local: true });
    const across = peer("across", "all", { zone: "b", local: false });
    const book = new RequestBook();
    const sending = book.add(busy, [0, 1], false, 0);
    book.add(busy, [2, 3], false, 0);
    const held = [4, 5, 6, 7];
    const tuning = { endgamePieces: 0, maxInflightPerPeer: 8 };
    // The second call has had no byte for 10 s, but the first one is receiving: the peer is sending.
    book.data(sending, 1, 9_900);
    assert.ok(
      !plan({ held, peers: [across], book, nowMs: 10_000, tuning }).some((p) => p.pieces.includes(2)),
      "queued call hedged across zones",
    );
    // The peer sent nothing for longer than hedgeAfterMs: the silent calls are hedged.
    assert.ok(plan({ held, peers: [across], book, nowMs: 20_000, tuning }).some((p) => p.pieces.includes(2)));
  });

  it("a stalled same-zone call is hedged in its zone after hedgeAfterMs, across zones only after siblingWaitMs", () => {
    const stalled = peer("stalled", "all", { zone: "a", local: true });
    const across = peer("across", "all", { zone: "b", local: false });
    const inZone = peer("in-zone", "all", { zone: "a", local: true });
    const tuning = { endgamePieces: 0, hedgeAfterMs: 500, siblingWaitMs: 1_500 };
    const held = [2, 3, 4, 5, 6, 7];
    const hedged = (peers: SwarmPeer[], silentMs: number): string[] => {
      const book = new RequestBook();
      const request = book.add(stalled, [0, 1], false, 0);
      book.data(request, 1, 10_000 - silentMs);
      return summary(plan({ zone: "a", held, peers, book, nowMs: 10_000, tuning }));
    };
    assert.deepEqual(hedged([inZone], 600), ["in-zone:0,1"], "in the zone after hedgeAfterMs");
    assert.deepEqual(hedged([across], 600), [], "not across zones after hedgeAfterMs alone");
    assert.deepEqual(hedged([across], 1_600), ["across:0,1"], "across zones after siblingWaitMs");
    // A relay to a same-zone downloader that stopped growing: the same patience before crossing zones.
    const downloader = peer("downloader", [], { zone: "a", local: true, grewAtMs: 0 });
    const relayed = (silentMs: number): string[] => {
      const book = new RequestBook();
      const request = book.add(downloader, [0, 1], true, 0);
      book.data(request, 0, 10_000 - silentMs);
      return summary(plan({ zone: "a", held, peers: [across], book, nowMs: 10_000, tuning }));
    };
    assert.deepEqual(relayed(600), [], "a relay is not hedged across zones after hedgeAfterMs alone");
    assert.deepEqual(relayed(1_600), ["across:0,1"]);
  });

  it("a piece a seed holds is not relayed from a downloader that only waits for it", () => {
    const waiting = peer("waiting", [], { pieces: 4 });
    const seed = peer("seed", "all", { pieces: 4 });
    const planned = plan({ pieces: 4, peers: [waiting, seed] });
    assert.ok(!planned.some((p) => p.peer === waiting), `not relayed: ${summary(planned).join(" ")}`);
    assert.ok(
      planned.some((p) => p.peer === seed && p.waitMs === 0 && p.pieces.includes(0)),
      `from the seed: ${summary(planned).join(" ")}`,
    );
    // A piece only another downloader holds is still relayed from one that is about to receive it.
    const holder = peer("holder", [0], { pieces: 4 });
    assert.ok(plan({ pieces: 4, peers: [waiting, holder] }).some((p) => p.peer === waiting && p.waitMs > 0 && p.pieces.includes(0)));
    // A one-piece blob (an image config) held by its grantee: never relayed among the downloaders.
    const first = peer("first", [], { pieces: 1 });
    const second = peer("second", [], { pieces: 1 });
    const grantee = peer("grantee", [0], { pieces: 1 });
    const config = plan({ pieces: 1, peers: [first, second, grantee], granteeAgentId: "grantee" });
    assert.deepEqual(summary(config), ["grantee:0"], "asked of the grantee, not relayed from a sibling that waits for it too");
  });

  it("a small blob (an image config) is taken from its seed by every downloader, without fan-out", () => {
    const siblings = ["first", "second", "third"].map((id) => peer(id, [], { pieces: 1 }));
    const grantee = peer("grantee", [0], { pieces: 1 });
    const scenario = (selfAgentId: string, blobBytes?: number): Scenario => ({
      pieces: 1,
      peers: [...siblings, grantee],
      granteeAgentId: "grantee",
      selfAgentId,
      ...(blobBytes === undefined ? {} : { blobBytes }),
    });
    // An agent whose share the config is not: with fan-out it waits for the owner's relay.
    const nonOwner = ["self-a", "self-b", "self-c", "self-d", "self-e", "self-f"].find((id) =>
      plan(scenario(id)).every((p) => p.peer !== grantee),
    );
    assert.ok(nonOwner !== undefined, "some agent is not the config's owner");
    assert.deepEqual(
      summary(plan(scenario(nonOwner))).filter((s) => s.startsWith("grantee")),
      [],
      "fan-out: a large blob's piece is left to its owner",
    );
    assert.deepEqual(summary(plan(scenario(nonOwner, 949))), ["grantee:0"], "a 949-byte config: straight from the grantee");
    // At the bound still small; past it, fan-out again.
    assert.deepEqual(summary(plan(scenario(nonOwner, SMALL_READ_BYTES))), ["grantee:0"]);
    assert.ok(plan(scenario(nonOwner, SMALL_READ_BYTES + 1)).every((p) => p.peer !== grantee));
  });

  it("a relay is hedged only when its peer stopped growing", () => {
    const relayPeer = peer("relay", [0], { grewAtMs: 9_000 });
    const holder = peer("holder", "all");
    const book = new RequestBook();
    book.add(relayPeer, [1], true, 0);
    const held = [0, 2, 3, 4, 5, 6, 7];
    assert.deepEqual(
      summary(plan({ held, peers: [holder], book, nowMs: 10_000, tuning: { endgamePieces: 0 } })),
      [],
      "the relay peer grows",
    );
    relayPeer.grewAtMs = 5_000;
    assert.deepEqual(summary(plan({ held, peers: [holder], book, nowMs: 10_000, tuning: { endgamePieces: 0 } })), ["holder:1"]);
  });

  it("relays stop when too many pieces wait for their hashes", () => {
    const picker = new PiecePicker({ pieceCount: 8, selfAgentId: undefined, zone: "", tuning: TUNING, random: IDENTITY });
    const book = new RequestBook();
    const planned = picker.plan({
      nowMs: 10_000,
      held: () => false,
      parked: () => false,
      parkedCount: MAX_PARKED_PIECES,
      peers: [peer("p", [0])],
      busy: [],
      granteeAgentId: undefined,
      requestsFor: (i) => book.requestsFor(i),
    });
    assert.deepEqual(summary(planned), ["p:0"], "held pieces only, no relay");
  });
});

describe("RequestBook", () => {
  it("keeps per-peer in-flight counts and the piece index in step", () => {
    const p = peer("p", "all");
    const book = new RequestBook();
    const a = book.add(p, [1, 2], false, 0);
    const b = book.add(p, [2], true, 5);
    assert.equal(p.inflight, 3);
    assert.equal(book.requestsFor(2).length, 2);
    book.settle(a, 1);
    book.settle(a, 1);
    assert.equal(p.inflight, 2, "settling twice counts once");
    book.finish(a);
    assert.equal(p.inflight, 1);
    assert.deepEqual(book.requestsFor(2), [b]);
    book.finish(b);
    assert.equal(p.inflight, 0);
    assert.equal(book.isRequested(2), false);
    assert.equal(book.size, 0);
  });
});
