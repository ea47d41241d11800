import { CrossZoneShare } from "./cross-zone-share.js";
import type { PieceRequest } from "./request-book.js";
import type { SwarmPeer } from "./swarm-peers.js";
import { SMALL_READ_BYTES } from "./upload-slots.js";

/** The scheduling knobs the picker uses (a subset of SwarmTuning). */
export interface PickerTuning {
  /** Pieces requested from one peer at once. */
  readonly maxInflightPerPeer: number;
  /** Pieces per ReadPieces call. */
  readonly piecesPerRequest: number;
  /** Pieces after the first missing one fetched before rarer ones, so the reader streams in order. */
  readonly inOrderWindow: number;
  /** Pieces a partial holder is asked for just past what it holds, relayed as they arrive there. */
  readonly relayAhead: number;
  /** How long a peer may wait for such a piece. */
  readonly relayWaitMs: number;
  /**
   * A request whose call has received nothing for this long may be duplicated to another peer of the
   * zone (hedging); to another zone only after max(hedgeAfterMs, siblingWaitMs).
   */
  readonly hedgeAfterMs: number;
  /** Endgame (the last few pieces, all requested) may duplicate only when at most this many pieces are missing… */
  readonly endgamePieces: number;
  /** …and only requests whose call has been silent for this long: a peer still sending is not duplicated. */
  readonly endgameSilenceMs: number;
  /** See CrossZoneShare: how long a sibling's share is waited for. */
  readonly siblingWaitMs: number;
}

/** Pieces received before their hash was known, held until a lookup brings it. */
export const MAX_PARKED_PIECES = 16;

/** What one planning pass sees. Peers are the usable ones (not backed off, not excluded), best ranked first. */
export interface PickerState {
  readonly nowMs: number;
  /** Whether this agent holds piece i. */
  held(index: number): boolean;
  /** Whether piece i was received and waits for its hash. */
  parked(index: number): boolean;
  readonly parkedCount: number;
  readonly peers: readonly SwarmPeer[];
  /**
   * Peers that refused a call for lack of upload slots a moment ago (SwarmPeers.busy): asked for nothing
   * now, but they hold what they hold. They count as holders in their zone, as siblings and as seeds, so
   * a same-zone peer at its upload cap is waited for rather than replaced by another zone's holders (and
   * a busy sibling keeps its cross-zone share).
   */
  readonly busy: readonly SwarmPeer[];
  /** The origin grantee per the last lookup (a seed while it is still partial). */
  readonly granteeAgentId: string | undefined;
  requestsFor(index: number): readonly PieceRequest[];
  /**
   * How long a call must be silent to count as stopped, for a base of hedgeAfterMs or endgameSilenceMs
   * (RequestBook.patienceMs: longer while calls pause on a busy machine); the base when not given.
   */
  patienceMs?(baseMs: number): number;
  /**
   * At most this many pieces in this pass, all peers together (the download's part of the agent's
   * ReceiveBudget); unlimited when not given. The pass then goes round the peers a batch at a time, so the
   * room is spread over them instead of filling the best-ranked peer's queue first.
   */
  readonly maxPieces?: number;
}

/** A call to make: pieces in order, and how long the peer may wait for them (relays). */
export interface PlannedRequest {
  readonly peer: SwarmPeer;
  readonly pieces: number[];
  readonly waitMs: number;
}

/** What one pass works from. */
interface Pass {
  readonly nowMs: number;
  /** Missing pieces nobody was asked for yet, best first; planned requests take pieces out of it. */
  readonly unrequested: number[];
  readonly missing: readonly number[];
  /** Usable peers holding each piece. */
  readonly all: Uint16Array;
  /** Usable same-zone peers holding each piece (the same array as `all` when zones are not in play). */
  readonly local: Uint16Array;
  /** Usable downloaders (the seed share's siblings) holding each piece: they can relay it. */
  readonly atDownloaders: Uint16Array;
  /** Usable same-zone seeds (the origin grantee, complete holders) holding each piece. */
  readonly atSeeds: Uint16Array;
  readonly granteeAgentId: string | undefined;
  /** Pieces this pass already planned a duplicate of: one duplicate per piece and pass. */
  readonly duplicated: Set<number>;
}

export interface PiecePickerOptions {
  readonly pieceCount: number;
  /**
   * The blob's size. A blob of at most SMALL_READ_BYTES (an image config) is taken from a seed by every
   * downloader itself, without fan-out: the seed's few extra copies cost less than the relay hop's wait.
   * Unknown (undefined): fan-out as for any blob.
   */
  readonly blobBytes?: number | undefined;
  /** This agent's tracker id; undefined: it fetches every piece itself (no shares). */
  readonly selfAgentId: string | undefined;
  /** This agent's zone; "" (unknown) treats every peer as local. */
  readonly zone: string;
  readonly tuning: PickerTuning;
  /** Uniform in [0, 1): the tie-break among equally rare pieces (Math.random in production, seeded in tests). */
  readonly random: () => number;
}

/**
 * Decides which pieces to ask of which peer: a pure function of the state it is given, the clock it is
 * given and its own random tie-break, so tests drive it table by table. Rules, in order:
 * - pieces a peer holds, the in-order window first (the client streams from the front), then rarest, then
 *   the random tie-break (with a fixed order every agent would want the same pieces at the same moment);
 * - zones: a piece is taken from another zone only when no usable same-zone peer holds it, and then only
 *   if it is this agent's share among the same-zone agents downloading it too (CrossZoneShare), or the
 *   sibling whose share it is has not brought it in time;
 * - fan-out (super-seeding): a seed (the origin grantee, a complete holder) is asked only for pieces no
 *   downloader holds, and of those only this agent's share (the same rendezvous split); the rest is taken
 *   from the downloader whose share it is, relayed while it arrives there. Not for a small blob (an image
 *   config), which every downloader takes from a seed itself;
 * - relays: a partial holder is asked for the pieces just past its contiguous prefix, which it is receiving;
 * - duplicates only for requests that stopped making progress: a call silent for hedgeAfterMs (or a relay
 *   whose peer stopped growing), and in the endgame a call silent for endgameSilenceMs, each stretched
 *   while the download's calls pause between bytes (state.patienceMs: a busy machine). A peer that is
 *   slow but sending is never duplicated: that only doubles the traffic. A duplicate crosses zones only
 *   after max(hedgeAfterMs, siblingWaitMs), and never in the endgame;
 * - a peer that refused a call as busy is asked again after a moment and meanwhile still counts as a
 *   holder in its zone: backpressure is waited for, never answered by fetching across zones.
 */
export class PiecePicker {
  private readonly share: CrossZoneShare;
  /** The split of pieces only seeds hold among the agents downloading the blob (fan-out). */
  private readonly seedShare: CrossZoneShare;
  private readonly tiebreak: Uint32Array;
  /** Fan-out is off for this blob (PiecePickerOptions.blobBytes). */
  private readonly small: boolean;
  private wasCapped = false;

  constructor(private readonly options: PiecePickerOptions) {
    this.small = options.blobBytes !== undefined && options.blobBytes <= SMALL_READ_BYTES;
    this.share = new CrossZoneShare(options.pieceCount, options.selfAgentId, options.tuning.siblingWaitMs);
    this.seedShare = new CrossZoneShare(options.pieceCount, options.selfAgentId, options.tuning.siblingWaitMs);
    this.tiebreak = shuffledIndexes(options.pieceCount, options.random);
  }

  /** Usable or busy peers holding at least one piece this agent misses. */
  suppliers(state: PickerState): number {
    const { pieceCount } = this.options;
    let firstMissing = 0;
    while (firstMissing < pieceCount && state.held(firstMissing)) firstMissing++;
    if (firstMissing === pieceCount) return 0;
    // Asked on every pass of a download that knows no grantee: a complete holder answers without a scan.
    return [...state.peers, ...state.busy].filter((peer) => {
      if (peer.complete) return true;
      for (let i = firstMissing; i < pieceCount; i++) if (!state.held(i) && holds(peer, i)) return true;
      return false;
    }).length;
  }

  plan(state: PickerState): PlannedRequest[] {
    const { pieceCount, tuning, zone } = this.options;
    this.wasCapped = false;
    const missing: number[] = [];
    for (let i = 0; i < pieceCount; i++) if (!state.held(i) && !state.parked(i)) missing.push(i);
    if (missing.length === 0) return [];
    const firstMissing = missing[0] ?? 0;
    // Who holds what, and who shares the work, counts busy peers too: only requests go to usable ones.
    const holders = state.busy.length === 0 ? state.peers : [...state.peers, ...state.busy];
    const local = new Uint16Array(pieceCount);
    const all = zone === "" ? local : new Uint16Array(pieceCount);
    for (const peer of holders) count(peer.local || zone === "" ? local : all, peer, pieceCount);
    if (zone !== "") for (let i = 0; i < pieceCount; i++) all[i] = (all[i] ?? 0) + (local[i] ?? 0);
    if (zone !== "") this.share.setSiblings(holders.filter((p) => p.local && !p.complete));
    const downloaders = holders.filter((p) => p.local && !p.complete && p.agentId !== state.granteeAgentId);
    this.seedShare.setSiblings(downloaders);
    const atDownloaders = new Uint16Array(pieceCount);
    const atSeeds = new Uint16Array(pieceCount);
    for (const peer of downloaders) count(atDownloaders, peer, pieceCount);
    for (const peer of holders) if (peer.local && isSeed(peer, state.granteeAgentId)) count(atSeeds, peer, pieceCount);
    const rank = (i: number): number =>
      (i < firstMissing + tuning.inOrderWindow ? 0 : 1e12) + (all[i] ?? 0) * 1e6 + (this.tiebreak[i] ?? 0);
    const unrequested = missing.filter((i) => state.requestsFor(i).length === 0).sort((a, b) => rank(a) - rank(b));
    const pass: Pass = {
      nowMs: state.nowMs,
      unrequested,
      missing,
      all,
      local,
      atDownloaders,
      atSeeds,
      granteeAgentId: state.granteeAgentId,
      duplicated: new Set(),
    };
    const planned: PlannedRequest[] = [];
    let parked = state.parkedCount;
    let left = state.maxPieces ?? Number.POSITIVE_INFINITY;
    const rooms = state.peers.map((peer) => tuning.maxInflightPerPeer - peer.inflight);
    // Best ranked first: the tracker ranks same-zone peers first, so they claim pieces before others may.
    // Round by round, one batch per peer: a limited pass spreads its pieces over the peers.
    for (let more = true; more;) {
      more = false;
      for (const [k, peer] of state.peers.entries()) {
        const room = rooms[k] ?? 0;
        if (room <= 0) continue;
        if (left <= 0) {
          this.wasCapped = true;
          return planned;
        }
        const batch = this.pick(peer, pass, Math.min(room, tuning.piecesPerRequest, left), parked < MAX_PARKED_PIECES, state);
        if (batch.pieces.length === 0) {
          rooms[k] = 0;
          continue;
        }
        rooms[k] = room - batch.pieces.length;
        left -= batch.pieces.length;
        more = true;
        // A relayed piece may arrive before its hash and be parked: count it against the limit now.
        if (batch.waitMs > 0) parked += batch.pieces.length;
        planned.push({ peer, ...batch });
      }
    }
    return planned;
  }

  /**
   * Whether the last plan stopped at PickerState.maxPieces while some peer still had room: the download
   * would have asked for more (it is hungry for its ReceiveBudget share).
   */
  get capped(): boolean {
    return this.wasCapped;
  }

  /** Pieces for one request to `peer`: pieces it holds first, else the ones it is about to receive. */
  private pick(peer: SwarmPeer, pass: Pass, count: number, mayRelay: boolean, state: PickerState): { pieces: number[]; waitMs: number } {
    const { tuning } = this.options;
    const { nowMs, unrequested, missing, all, local, atDownloaders, atSeeds } = pass;
    // Across zones only what nobody in this zone holds, and of that this agent's share (CrossZoneShare);
    // `available`: a peer in another zone holds the piece now.
    const mayCross = (i: number, available: boolean): boolean => (local[i] ?? 0) === 0 && this.share.mayFetch(i, nowMs, available);
    // From a seed only what no downloader holds, and of that this agent's share (fan-out); a small blob
    // from any seed.
    const seed = !this.small && isSeed(peer, pass.granteeAgentId);
    const fromSeed = (i: number, available: boolean): boolean =>
      !seed || ((atDownloaders[i] ?? 0) === 0 && this.seedShare.mayFetch(i, nowMs, available));
    const mayTake = (i: number, available: boolean): boolean => (peer.local || mayCross(i, available)) && fromSeed(i, available);
    // Only another zone holds the piece and this agent may fetch it from there now (never without zones).
    const crossNow = (i: number): boolean => (local[i] ?? 0) === 0 && (all[i] ?? 0) > 0 && mayCross(i, true);
    const take = (candidates: number[], accept: (i: number) => boolean): number[] => {
      const chosen: number[] = [];
      for (let k = 0; k < candidates.length && chosen.length < count; k++) {
        const i = candidates[k] ?? -1;
        if (!accept(i)) continue;
        chosen.push(i);
        candidates.splice(k--, 1);
      }
      return chosen;
    };
    const held = take(unrequested, (i) => holds(peer, i) && mayTake(i, true));
    if (held.length > 0) return { pieces: held, waitMs: 0 };
    // Relay: a partial holder is asked for the pieces just past its contiguous prefix, which it is receiving.
    // Not a piece due from another zone: a same-zone partial holder that is not receiving it (not
    // downloading any more) ranks above the other zone's holders and would be asked again and again.
    // Not a piece a same-zone seed holds already: that comes from the seed (this agent's share) or from
    // the downloader whose share it is (below). Downloaders relaying it from one another would keep it
    // requested, so never asked of the seed: a one-piece blob (an image config) went round the
    // downloaders in 500 ms relays for seconds while its grantee held it.
    if (mayRelay && !peer.complete && peer.bitmap) {
      const frontier = peer.bitmap.firstMissing();
      const ahead = take(
        unrequested,
        (i) => i >= frontier && i < frontier + tuning.relayAhead && (atSeeds[i] ?? 0) === 0 && !crossNow(i) && mayTake(i, false),
      );
      if (ahead.length > 0) return { pieces: ahead, waitMs: tuning.relayWaitMs };
    }
    // Fan-out: a downloader is asked for its share of the pieces a same-zone seed holds, which it is
    // fetching from there, relayed as they arrive.
    if (mayRelay && !seed && peer.local && !this.small) {
      const owned = take(unrequested, (i) => !holds(peer, i) && (atSeeds[i] ?? 0) > 0 && this.seedShare.ownedBy(i, peer.seed));
      if (owned.length > 0) return { pieces: owned, waitMs: tuning.relayWaitMs };
    }
    // Duplicates, only of requests that stopped making progress. Endgame duplicates stay in the zone; a
    // stalled request may be hedged across zones (the byte counter shows it), but only after the patience a
    // sibling's cross-zone share gets (siblingWaitMs): on a busy machine a same-zone call is often silent for
    // half a second, and its duplicate costs nothing in the zone but a copy's bytes across zones.
    const endgame = unrequested.length === 0 && missing.length <= tuning.endgamePieces && peer.local;
    const patience = (baseMs: number): number => state.patienceMs?.(baseMs) ?? baseMs;
    const hedgeMs = patience(peer.local ? tuning.hedgeAfterMs : Math.max(tuning.hedgeAfterMs, tuning.siblingWaitMs));
    const endgameSilenceMs = patience(tuning.endgameSilenceMs);
    const duplicate = missing.filter((i) => {
      if (pass.duplicated.has(i)) return false;
      const running = state.requestsFor(i);
      const only = running[0];
      if (running.length !== 1 || only === undefined || only.peer === peer || !holds(peer, i)) return false;
      const silentMs = nowMs - only.lastDataMs;
      // A relay waits for its peer to receive the piece: stalled only when that peer stopped growing.
      if (only.relay) return silentMs > hedgeMs && nowMs - only.peer.grewAtMs > hedgeMs;
      if (endgame) return silentMs > endgameSilenceMs;
      // A call queued behind the same peer's other calls is silent while the peer's link is busy sending
      // them: stalled only when the peer as a whole sent nothing for hedgeAfterMs.
      return silentMs > hedgeMs && nowMs - only.peer.dataAtMs > hedgeMs;
    });
    const chosen = duplicate.slice(0, count);
    for (const i of chosen) pass.duplicated.add(i);
    return { pieces: chosen, waitMs: 0 };
  }
}

/** Whether `peer` holds piece `index`. */
export function holds(peer: SwarmPeer, index: number): boolean {
  return peer.complete || (peer.bitmap?.has(index) ?? false);
}

/** A seed: a complete holder, or the origin grantee (fetching the blob from the origin). */
function isSeed(peer: SwarmPeer, granteeAgentId: string | undefined): boolean {
  return peer.complete || peer.agentId === granteeAgentId;
}

function count(counts: Uint16Array, peer: SwarmPeer, pieceCount: number): void {
  if (peer.complete) {
    for (let i = 0; i < pieceCount; i++) counts[i] = (counts[i] ?? 0) + 1;
  } else if (peer.bitmap) {
    for (let i = 0; i < pieceCount; i++) if (peer.bitmap.has(i)) counts[i] = (counts[i] ?? 0) + 1;
  }
}

function shuffledIndexes(count: number, random: () => number): Uint32Array {
  const order = Uint32Array.from({ length: count }, (_, i) => i);
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const swap = order[i] ?? 0;
    order[i] = order[j] ?? 0;
    order[j] = swap;
  }
  return order;
}
