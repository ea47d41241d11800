import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import type { AgentMetrics } from "../metrics/index.js";
import type { PartialBlob } from "../store/blob-store.js";
import type { LookupResult, Tracker } from "../tracker/tracker.js";
import { CrossZoneShare } from "./cross-zone-share.js";
import { isPeerError } from "./errors.js";
import { sameHash } from "../piece/index.js";
import type { PieceSource, ReceivedPiece } from "./piece-source.js";
import { type SwarmPeer, SwarmPeers } from "./swarm-peers.js";

export interface SwarmTuning {
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
  /** Lookups to refresh holders, bitmaps and hashes. */
  readonly refreshIntervalMs: number;
  /** Progress announces (bitmap and verified hashes). */
  readonly announceIntervalMs: number;
  /** No piece obtainable from peers for this long: ask for the origin grant. */
  readonly stallMs: number;
  /** A request older than this may be duplicated to another peer (hedging slow peers). */
  readonly hedgeAfterMs: number;
  /**
   * Endgame (every missing piece requested: duplicate the requests in flight to other holders) starts
   * only when at most this many pieces are missing. Fan-out relays request pieces well ahead of what
   * peers hold, so "all requested" alone would duplicate a good part of a download.
   */
  readonly endgamePieces: number;
  /**
   * A piece a same-zone peer is to fetch from another zone (CrossZoneShare) is fetched by this agent
   * itself once it has been available there this long and that peer has not gained a piece for as long.
   * Keep it below stallMs, or a download waiting on a gone sibling reports a stall first.
   */
  readonly siblingWaitMs: number;
}

export const DEFAULT_SWARM_TUNING: SwarmTuning = {
  maxInflightPerPeer: 4,
  piecesPerRequest: 2,
  inOrderWindow: 4,
  relayAhead: 2,
  relayWaitMs: 3_000,
  refreshIntervalMs: 500,
  announceIntervalMs: 250,
  stallMs: 3_000,
  hedgeAfterMs: 3_000,
  endgamePieces: 4,
  siblingWaitMs: 1_500,
};

/** This agent as the tracker knows it. */
export interface SwarmSelf {
  readonly agentId: string;
  /** topology.kubernetes.io/zone; "" (unknown) makes every peer count as same-zone: no preference. */
  readonly zone: string;
}

/** Pieces received before their hash was known, held until a lookup brings it. */
const MAX_PARKED_PIECES = 16;

export interface SwarmDownloadContext {
  readonly partial: PartialBlob;
  readonly tracker: Tracker;
  readonly pieces: PieceSource;
  readonly hashes: (Uint8Array | undefined)[];
  readonly metrics: AgentMetrics;
  readonly logger: Logger;
  readonly tuning: SwarmTuning;
  /** Undefined: zones are not in play (every peer is preferred alike, bytes are counted as zone "unknown"). */
  readonly self: SwarmSelf | undefined;
  readonly signal: AbortSignal;
  /** The lookup that started the download. */
  readonly first: LookupResult;
  /**
   * Agents that sent pieces failing their hash, for this blob: shared by every download round of one
   * fetch, so a bad peer stays dropped when a stalled round is followed by the next.
   */
  readonly badAgents?: Set<string>;
}

/**
 * How a swarm download ended: all pieces held; or no progress for a while, with `suppliers` = usable
 * peers that hold some missing piece (0: no peer can supply the rest, only the origin can).
 */
export type SwarmOutcome =
  | { readonly kind: "complete" }
  | {
      readonly kind: "stalled";
      readonly suppliers: number;
      readonly excludedAgents: readonly string[];
      /** The origin grantee (another agent) gained pieces within stallMs: the rest is coming, no need for the origin. */
      readonly granteeProgressing: boolean;
    };

interface Request {
  readonly peer: SwarmPeer;
  readonly pieces: number[];
  readonly startedMs: number;
  readonly controller: AbortController;
  /** A relay request (pieces the peer may not have yet) is no evidence that the swarm can finish. */
  readonly relay: boolean;
}

/** What one scheduling pass works from. */
interface Pass {
  readonly nowMs: number;
  /** Missing pieces nobody was asked for yet, best first; requests take pieces out of it. */
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
}

/**
 * Fetches the missing pieces of one blob from peers. Its state is owned by this object and changed only
 * from its own loop and request callbacks (one event loop, Kraken-style): rarest first, with the pieces
 * right after the first missing one first so the client streams in order; a bounded number of pieces in
 * flight per peer; pieces a partial holder is about to receive requested ahead (relay while arriving);
 * duplicates of slow or last requests (hedging, endgame); every piece checked against its SHA-256, and a
 * peer that sends a bad one dropped for this blob.
 *
 * Zones (when this agent's zone is known): a piece is taken from another zone only when no usable
 * same-zone peer holds it, and then only if it is this agent's share among the same-zone agents
 * downloading it too (CrossZoneShare) or the sibling whose share it is has not brought it in time.
 * Cross-zone peers still get hedged duplicates of slow requests, but no endgame duplicates.
 *
 * Fan-out (super-seeding): a seed (the origin grantee, or a complete holder) is asked only for pieces no
 * downloader holds, and of those only this agent's share among the downloaders (the same rendezvous split,
 * `seedShare`); the rest is taken from the downloader whose share it is, relayed while it arrives there.
 * So each fresh piece leaves the seed about once and the downloaders' uploads carry the rest. A piece
 * whose owner has not gained a piece for siblingWaitMs is taken from the seed anyway.
 */
export class SwarmDownload {
  private readonly peers: SwarmPeers;
  private readonly share: CrossZoneShare;
  /** The split of pieces only seeds hold among the agents downloading the blob (fan-out). */
  private readonly seedShare: CrossZoneShare;
  /** The origin grantee per the last lookup: a seed while it is still partial. */
  private granteeAgentId: string | undefined;
  private readonly zone: string;
  /** Piece → requests in flight for it. */
  private readonly requested = new Map<number, Request[]>();
  private readonly parked = new Map<number, { peer: SwarmPeer; piece: ReceivedPiece }>();
  private readonly unannouncedHashes = new Set<number>();
  private wake: (() => void) | undefined;
  private lastProgressMs = performance.now();
  private lastRefreshMs = 0;
  private lastAnnounceMs = 0;
  private needRefresh = false;
  private changedSinceAnnounce = false;
  private bytesFromPeers = 0;
  /**
   * A random order among pieces equally rare: with a fixed order (say by index) every agent would want
   * the same pieces at the same moment, all from the same holder, and have nothing to trade.
   */
  private readonly tiebreak: Uint32Array;

  constructor(private readonly ctx: SwarmDownloadContext) {
    // In Kubernetes the agent cannot read its Node's zone label; the tracker tells it.
    this.zone = ctx.self === undefined ? "" : ctx.self.zone !== "" ? ctx.self.zone : ctx.first.askerZone;
    this.peers = new SwarmPeers(ctx.partial.pieceCount, this.zone);
    this.share = new CrossZoneShare(ctx.partial.pieceCount, ctx.self?.agentId, ctx.tuning.siblingWaitMs);
    this.seedShare = new CrossZoneShare(ctx.partial.pieceCount, ctx.self?.agentId, ctx.tuning.siblingWaitMs);
    this.tiebreak = shuffledIndexes(ctx.partial.pieceCount);
    this.apply(ctx.first);
  }

  get peerBytes(): number {
    return this.bytesFromPeers;
  }

  async run(): Promise<SwarmOutcome> {
    const { partial, signal, tuning } = this.ctx;
    this.announce(true);
    try {
      while (partial.heldPieces < partial.pieceCount) {
        signal.throwIfAborted();
        const now = performance.now();
        if (this.needRefresh || now - this.lastRefreshMs >= tuning.refreshIntervalMs) await this.refresh();
        this.schedule(performance.now());
        if (now - this.lastAnnounceMs >= tuning.announceIntervalMs) this.announce(false);
        const after = performance.now();
        if (after - this.lastProgressMs >= tuning.stallMs && !this.productiveRequests(after)) {
          return { kind: "stalled", suppliers: this.suppliers(after), excludedAgents: [...new Set([...this.peers.excluded(), ...(this.ctx.badAgents ?? [])])], granteeProgressing: this.granteeProgressing(after) };
        }
        await this.sleep(Math.min(tuning.refreshIntervalMs, tuning.announceIntervalMs));
      }
      return { kind: "complete" };
    } finally {
      for (const requests of this.requested.values()) for (const r of requests) r.controller.abort();
      for (const { piece } of this.parked.values()) piece.release();
      this.parked.clear();
      this.announce(true);
    }
  }

  /**
   * A request for pieces a peer holds, or a relay from a peer that keeps gaining pieces (a downloader
   * whose share this agent waits for): the download is moving, however slowly.
   */
  private productiveRequests(nowMs: number): boolean {
    const { stallMs } = this.ctx.tuning;
    for (const requests of this.requested.values()) if (requests.some((r) => !r.relay || nowMs - r.peer.grewAtMs < stallMs)) return true;
    return false;
  }

  private granteeProgressing(nowMs: number): boolean {
    const grantee = this.granteeAgentId;
    if (grantee === undefined || grantee === this.ctx.self?.agentId) return false;
    return this.peers.usable(nowMs).some((p) => p.agentId === grantee && nowMs - p.grewAtMs < this.ctx.tuning.stallMs);
  }

  private isSeed(peer: SwarmPeer): boolean {
    return peer.complete || peer.agentId === this.granteeAgentId;
  }

  /** Usable peers holding at least one piece we miss. */
  private suppliers(nowMs: number): number {
    const { partial } = this.ctx;
    return this.peers.usable(nowMs).filter((peer) => {
      for (let i = 0; i < partial.pieceCount; i++) if (!partial.hasPiece(i) && this.peers.has(peer, i)) return true;
      return false;
    }).length;
  }

  /** Dispatches requests to every peer with room; returns whether anything was dispatched. */
  private schedule(nowMs: number): boolean {
    const { partial, tuning } = this.ctx;
    const missing: number[] = [];
    for (let i = 0; i < partial.pieceCount; i++) if (!partial.hasPiece(i) && !this.parked.has(i)) missing.push(i);
    if (missing.length === 0) return false;
    const firstMissing = missing[0] ?? 0;
    const { all, local } = this.peers.availability(nowMs);
    if (this.zone !== "") this.share.setSiblings(this.peers.siblings(nowMs));
    const downloaders = this.peers.downloaders(nowMs, this.granteeAgentId);
    this.seedShare.setSiblings(downloaders);
    const atDownloaders = new Uint16Array(partial.pieceCount);
    const atSeeds = new Uint16Array(partial.pieceCount);
    for (const peer of downloaders) for (let i = 0; i < partial.pieceCount; i++) if (this.peers.has(peer, i)) atDownloaders[i] = (atDownloaders[i] ?? 0) + 1;
    for (const peer of this.peers.usable(nowMs)) {
      if (!peer.local || !this.isSeed(peer)) continue;
      for (let i = 0; i < partial.pieceCount; i++) if (this.peers.has(peer, i)) atSeeds[i] = (atSeeds[i] ?? 0) + 1;
    }
    // In-order window first (the client streams from the front), then rarest, then the random tie-break.
    const rank = (i: number): number => (i < firstMissing + tuning.inOrderWindow ? 0 : 1e12) + (all[i] ?? 0) * 1e6 + (this.tiebreak[i] ?? 0);
    const unrequested = missing.filter((i) => !this.requested.has(i)).sort((a, b) => rank(a) - rank(b));
    const pass: Pass = { nowMs, unrequested, missing, all, local, atDownloaders, atSeeds };
    let dispatched = false;
    // Best ranked first: the tracker ranks same-zone peers first, so they claim pieces before others may.
    for (const peer of this.peers.usable(nowMs)) {
      let room = tuning.maxInflightPerPeer - peer.inflight;
      while (room > 0) {
        const batch = this.pick(peer, pass, Math.min(room, tuning.piecesPerRequest));
        if (batch.pieces.length === 0) break;
        room -= batch.pieces.length;
        this.request(peer, batch.pieces, batch.waitMs);
        dispatched = true;
      }
    }
    return dispatched;
  }

  /** Pieces for one request to `peer`: pieces it holds first, else the ones it is about to receive. */
  private pick(peer: SwarmPeer, pass: Pass, count: number): { pieces: number[]; waitMs: number } {
    const { tuning } = this.ctx;
    const { nowMs, unrequested, missing, all, local, atDownloaders, atSeeds } = pass;
    // Across zones only what nobody in this zone holds, and of that this agent's share (CrossZoneShare);
    // `available`: a peer in another zone holds the piece now.
    const mayCross = (i: number, available: boolean): boolean => (local[i] ?? 0) === 0 && this.share.mayFetch(i, nowMs, available);
    // From a seed only what no downloader holds, and of that this agent's share (fan-out).
    const seed = this.isSeed(peer);
    const fromSeed = (i: number, available: boolean): boolean => !seed || ((atDownloaders[i] ?? 0) === 0 && this.seedShare.mayFetch(i, nowMs, available));
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
    const held = take(unrequested, (i) => this.peers.has(peer, i) && mayTake(i, true));
    if (held.length > 0) return { pieces: held, waitMs: 0 };
    // Relay: a partial holder is asked for the pieces just past its contiguous prefix, which it is receiving.
    // Not a piece due from another zone: a same-zone partial holder that is not receiving it (not
    // downloading any more) ranks above the other zone's holders and would be asked again and again.
    // (A sibling's cross-zone share is not relayed from it: in which order it fetches its share is
    // unknown here, and relays waiting on pieces it gets to later would time out and be retried.)
    if (!peer.complete && peer.bitmap && this.parked.size < MAX_PARKED_PIECES) {
      const frontier = peer.bitmap.firstMissing();
      const ahead = take(unrequested, (i) => i >= frontier && i < frontier + tuning.relayAhead && !crossNow(i) && mayTake(i, false));
      if (ahead.length > 0) return { pieces: ahead, waitMs: tuning.relayWaitMs };
    }
    // Fan-out: a downloader is asked for its share of the pieces a same-zone seed holds, which it is
    // fetching from there, relayed as they arrive.
    if (!seed && peer.local && this.parked.size < MAX_PARKED_PIECES) {
      const owned = take(unrequested, (i) => !this.peers.has(peer, i) && (atSeeds[i] ?? 0) > 0 && this.seedShare.ownedBy(i, peer.seed));
      if (owned.length > 0) return { pieces: owned, waitMs: tuning.relayWaitMs };
    }
    // Endgame and hedging: duplicate a request that is the last ones left or has been slow, once. Endgame
    // duplicates stay in the zone; a slow request may be hedged across zones (the byte counter shows it).
    const endgame = unrequested.length === 0 && missing.length <= tuning.endgamePieces && peer.local;
    const duplicate = missing.filter((i) => {
      const running = this.requested.get(i);
      if (!running || running.length !== 1 || !this.peers.has(peer, i)) return false;
      const only = running[0];
      return only !== undefined && only.peer !== peer && (endgame || nowMs - only.startedMs > tuning.hedgeAfterMs);
    });
    return { pieces: duplicate.slice(0, count), waitMs: 0 };
  }

  private request(peer: SwarmPeer, pieces: number[], waitMs: number): void {
    const { partial, signal } = this.ctx;
    const controller = new AbortController();
    const request: Request = { peer, pieces, startedMs: performance.now(), controller, relay: waitMs > 0 };
    for (const i of pieces) this.requested.set(i, [...(this.requested.get(i) ?? []), request]);
    peer.inflight += pieces.length;
    const callSignal = AbortSignal.any([signal, controller.signal]);
    const run = async (): Promise<void> => {
      const iterator = this.ctx.pieces.readPieces(peer.address, { digest: partial.digest, pieceSize: partial.pieceSize, pieces, waitMs }, callSignal);
      for await (const piece of iterator) {
        // Whole pieces, counted when they arrive (verified or not): what crossed between the zones.
        this.ctx.metrics.countPeerBytesByZone(peer.zone, this.zone, piece.data.length);
        this.unrequest(request, piece.index);
        if (!(await this.receive(peer, piece))) {
          controller.abort();
          return;
        }
      }
    };
    run()
      .catch((error: unknown) => {
        if (callSignal.aborted) return;
        const now = performance.now();
        const reason = isPeerError(error) ? error.code.replace(/^ERR_PEER_/, "").toLowerCase() : "unavailable";
        this.ctx.metrics.peerErrors.inc({ reason });
        if (isPeerError(error, "ERR_PEER_BUSY")) this.peers.busy(peer, now);
        else if (isPeerError(error, "ERR_PEER_MISSING_PIECE")) this.needRefresh = true;
        else {
          this.peers.failed(peer, now);
          this.ctx.logger.debug({ err: error, peer: peer.address }, "piece request failed");
        }
      })
      .finally(() => {
        for (const i of pieces) this.unrequest(request, i);
        this.wakeUp();
      });
  }

  private unrequest(request: Request, index: number): void {
    const running = this.requested.get(index);
    if (!running?.includes(request)) return;
    request.peer.inflight--;
    const rest = running.filter((r) => r !== request);
    if (rest.length === 0) this.requested.delete(index);
    else this.requested.set(index, rest);
  }

  /** Verifies and keeps a piece (and releases it); false when the peer sent a bad one (and is dropped). */
  private async receive(peer: SwarmPeer, piece: ReceivedPiece): Promise<boolean> {
    const { partial, metrics, logger } = this.ctx;
    const index = piece.index;
    // Received bytes are counted by the PieceSource (PeerClient), which sees every byte off the wire.
    if (partial.hasPiece(index)) {
      piece.release();
      return true;
    }
    const expected = this.ctx.hashes[index];
    if (expected === undefined) {
      // Relayed before its hash reached the tracker: hold it until a lookup brings the hash.
      const previous = this.parked.get(index);
      if (previous !== undefined) previous.piece.release();
      this.parked.set(index, { peer, piece });
      this.needRefresh = true;
      return true;
    }
    if (!sameHash(piece.sha256, expected)) {
      piece.release();
      metrics.pieceVerificationFailures.inc();
      logger.warn({ peer: peer.address, agent: peer.agentId, piece: index, digest: partial.digest }, "peer sent a piece that does not match its hash; dropping the peer for this blob");
      this.peers.exclude(peer);
      this.ctx.badAgents?.add(peer.agentId);
      // Whatever else it is sending is suspect too: stop those calls instead of verifying more bad pieces.
      for (const requests of this.requested.values()) for (const r of requests) if (r.peer === peer) r.controller.abort();
      return false;
    }
    try {
      await partial.writePiece(index, piece.data, piece.sha256);
    } finally {
      piece.release();
    }
    this.bytesFromPeers += piece.data.length;
    this.lastProgressMs = performance.now();
    this.unannouncedHashes.add(index);
    this.changedSinceAnnounce = true;
    return true;
  }

  private async refresh(): Promise<void> {
    this.lastRefreshMs = performance.now();
    this.needRefresh = false;
    try {
      const result = await this.ctx.tracker.lookup(this.ctx.partial.digest, { wantOriginGrant: false, signal: this.ctx.signal });
      this.apply(result);
    } catch (error) {
      if (this.ctx.signal.aborted) throw error;
      this.ctx.logger.debug({ err: error }, "lookup failed during swarm download; going on with known peers");
    }
    for (const [index, { peer, piece }] of [...this.parked]) {
      if (this.ctx.hashes[index] === undefined) continue;
      this.parked.delete(index);
      await this.receive(peer, piece);
    }
  }

  private apply(result: LookupResult): void {
    if (result.pieceSize === this.ctx.partial.pieceSize && result.size === this.ctx.partial.size) {
      result.pieceHashes.forEach((hash, i) => {
        if (hash !== undefined && this.ctx.hashes[i] === undefined) this.ctx.hashes[i] = hash;
      });
      const bad = this.ctx.badAgents;
      this.peers.update(bad === undefined || bad.size === 0 ? result.holders : result.holders.filter((h) => !bad.has(h.agentId)), performance.now());
      this.granteeAgentId = result.origin.granteeAgentId;
    }
    this.ctx.metrics.peersKnown.set(this.peers.size);
  }

  private announce(force: boolean): void {
    if (!force && !this.changedSinceAnnounce) return;
    const { partial, tracker, hashes } = this.ctx;
    this.lastAnnounceMs = performance.now();
    this.changedSinceAnnounce = false;
    if (partial.state !== "open") return;
    const pieceHashes = [...this.unannouncedHashes].flatMap((index) => {
      const sha256 = hashes[index];
      return sha256 === undefined ? [] : [{ index, sha256 }];
    });
    this.unannouncedHashes.clear();
    tracker.announce({ digest: partial.digest, size: partial.size, pieceSize: partial.pieceSize, complete: false, bitmap: partial.bitmap(), pieceHashes });
  }

  private async sleep(ms: number): Promise<void> {
    const woken = new Promise<void>((resolve) => {
      this.wake = resolve;
    });
    await Promise.race([woken, sleep(ms, undefined, { signal: this.ctx.signal }).catch(() => undefined)]);
    this.wake = undefined;
  }

  private wakeUp(): void {
    this.wake?.();
  }
}

function shuffledIndexes(count: number): Uint32Array {
  const order = Uint32Array.from({ length: count }, (_, i) => i);
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    const swap = order[i] ?? 0;
    order[i] = order[j] ?? 0;
    order[j] = swap;
  }
  return order;
}
