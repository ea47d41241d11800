import { setImmediate as yieldToIo, setTimeout as sleep } from "node:timers/promises";
import { PIECE_HASH_BYTES, sameHash } from "../piece/index.js";
import { type BlobChange, DEFAULT_MAX_LOOKUP_HOLDERS, type LookupResult } from "../tracker/index.js";
import { LATE_TIMER_MS, OwnPauses } from "../util/index.js";
import { isPeerError } from "./errors.js";
import { lookupViaPeers } from "./peer-lookup.js";
import { MAX_PARKED_PIECES, type PiecePicker, type PlannedRequest } from "./piece-picker.js";
import type { ReceivedPiece } from "./piece-source.js";
import { ProgressAnnouncer } from "./progress-announcer.js";
import { loopSleepMs, type RefreshState, refreshDue } from "./refresh-schedule.js";
import { RequestBook } from "./request-book.js";
import type { BudgetShare } from "./receive-budget.js";
import { type SwarmPeer, SwarmPeers } from "./swarm-peers.js";
import { type SwarmDownloadContext, type SwarmOutcome, swarmZone } from "./swarm-round.js";
import { SMALL_READ_BYTES } from "./upload-slots.js";

/**
 * A silence is judged minus the time this agent itself did not run (OwnPauses), by at most this many stall
 * times: a download on a starved machine still ends after at most (1 + this) × stallMs without a byte.
 */
export const MAX_OWN_PAUSE_STALLS = 3;

/**
 * Fetches the missing pieces of one blob from peers: the loop around the PiecePicker (what to ask of
 * whom), the RequestBook (what is in flight) and the ProgressAnnouncer. Its state is changed only from
 * its own loop and its calls' callbacks (one event loop, Kraken-style). Every piece is checked against
 * its SHA-256 (computed by the PieceSource while it arrived); a peer that sends a bad one is dropped for
 * this blob and its other calls are stopped.
 */
export class SwarmDownload {
  private readonly peers: SwarmPeers;
  private readonly picker: PiecePicker;
  private readonly book: RequestBook;
  /** This download's part of the agent's ReceiveBudget; undefined: not limited by it (a small blob, tests). */
  private readonly share: BudgetShare | undefined;
  private readonly announcer: ProgressAnnouncer;
  private granteeAgentId: string | undefined;
  /** Since when nobody could bring the missing pieces (see SwarmTuning.orphanedMs); undefined while someone can. */
  private orphanedSinceMs: number | undefined;
  private readonly zone: string;
  private readonly parked = new Map<number, { peer: SwarmPeer; piece: ReceivedPiece }>();
  private wake: (() => void) | undefined;
  /** Last verified piece, or last byte received from any peer. */
  private lastProgressMs = performance.now();
  /** What of the silence since the last progress was this agent's own: it did not run. */
  private readonly ownPauses: OwnPauses;
  private lastRefreshMs = 0;
  private needRefresh = false;
  /** The tracker said the blob changed (and to look it up) since the last lookup started. */
  private noticed = false;
  /** A notice carried the change: the tracker's notices keep this download current without lookups. */
  private deltas = false;
  /** Holders the last lookup answered with. */
  private answeredHolders = 0;
  private bytesFromPeers = 0;

  constructor(private readonly ctx: SwarmDownloadContext) {
    this.zone = swarmZone(ctx.self, ctx.first);
    this.ownPauses = new OwnPauses(MAX_OWN_PAUSE_STALLS * ctx.tuning.stallMs);
    this.peers = ctx.peers;
    this.picker = ctx.picker;
    this.announcer = new ProgressAnnouncer(ctx.tracker, ctx.partial, ctx.tuning.announceIntervalMs);
    // A small blob goes ahead of the budget (SMALL_READ_BYTES); the share counts the book's pieces.
    this.share =
      ctx.budget !== undefined && ctx.partial.size > SMALL_READ_BYTES
        ? ctx.budget.join(ctx.partial.pieceSize, () => {
            this.wakeUp();
          })
        : undefined;
    this.book = new RequestBook(undefined, this.share);
    this.apply(ctx.first, ctx.degraded === true);
  }

  get peerBytes(): number {
    return this.bytesFromPeers;
  }

  async run(): Promise<SwarmOutcome> {
    const { partial, signal, tuning, tracker } = this.ctx;
    this.announcer.tick(true);
    const unwatch = tracker.watchBlob(partial.digest, (change) => {
      if (change === undefined || !this.applyChange(change)) this.noticed = true;
      this.wakeUp();
    });
    try {
      while (partial.heldPieces < partial.pieceCount) {
        signal.throwIfAborted();
        // Parked pieces whose hash a notice brought are kept first: no lookup for a hash already here.
        if (this.parked.size > 0) await this.unpark();
        // The pace of this pass is set by what was parked when it began.
        const parked = this.parked.size > 0;
        if (refreshDue(tuning, this.refreshState(performance.now(), parked))) await this.refresh();
        this.plan(performance.now());
        this.announcer.tick();
        const after = performance.now();
        if (this.orphaned(after)) {
          return { kind: "stalled", reason: "orphaned", suppliers: 0, excludedAgents: this.peers.excluded(), granteeProgressing: false };
        }
        // The silence is judged on the peers' time: minus this agent's own pauses since the last progress.
        const judgedAt = after - this.ownPauses.ms(after);
        if (judgedAt - this.lastProgressMs >= tuning.stallMs && !this.book.moving(judgedAt, tuning.stallMs)) {
          return {
            kind: "stalled",
            reason: "silent",
            suppliers: this.picker.suppliers(this.pickerState(after)),
            excludedAgents: this.peers.excluded(),
            granteeProgressing: this.granteeProgressing(after),
          };
        }
        await this.sleep(loopSleepMs(tuning, this.refreshState(performance.now(), parked)));
      }
      return { kind: "complete" };
    } finally {
      unwatch();
      this.ownPauses.close();
      this.book.abort();
      this.share?.leave();
      for (const { piece } of this.parked.values()) piece.release();
      this.parked.clear();
      this.announcer.tick(true);
    }
  }

  private refreshState(nowMs: number, parked: boolean): RefreshState {
    return {
      nowMs,
      lastRefreshMs: this.lastRefreshMs,
      needRefresh: this.needRefresh,
      noticed: this.noticed,
      parked,
      inflight: this.book.size,
      crowded: this.answeredHolders >= DEFAULT_MAX_LOOKUP_HOLDERS,
      notices: this.ctx.tracker.sendsNotices,
      deltas: this.deltas,
    };
  }

  /** Asks peers for what the picker chooses, within this download's part of the agent's receive budget. */
  private plan(nowMs: number): void {
    const share = this.share;
    const room = share?.room(nowMs);
    const planned = this.picker.plan({ ...this.pickerState(nowMs), ...(room === undefined ? {} : { maxPieces: room }) });
    // It wants more than it got when the budget, not the peers or the pieces, ended its plan.
    if (share !== undefined) share.hungry = this.picker.capped;
    for (const request of planned) this.request(request);
  }

  private pickerState(nowMs: number): Parameters<PiecePicker["plan"]>[0] {
    const { partial } = this.ctx;
    return {
      nowMs,
      held: (i) => partial.hasPiece(i),
      parked: (i) => this.parked.has(i),
      parkedCount: this.parked.size,
      peers: this.peers.usable(nowMs),
      busy: this.peers.busyNow(nowMs, this.ctx.tuning.siblingWaitMs),
      granteeAgentId: this.granteeAgentId,
      requestsFor: (i) => this.book.requestsFor(i),
      patienceMs: (baseMs) => this.book.patienceMs(baseMs, nowMs),
    };
  }

  /**
   * Nobody can bring the missing pieces: the tracker names no grantee (it released the grant of one that
   * disconnected) and no present peer holds a piece this agent misses, for orphanedMs. Not in degraded mode,
   * where no grants are known.
   */
  private orphaned(nowMs: number): boolean {
    if (this.ctx.degraded === true || this.granteeAgentId !== undefined || this.picker.suppliers(this.pickerState(nowMs)) > 0) {
      this.orphanedSinceMs = undefined;
      return false;
    }
    this.orphanedSinceMs ??= nowMs;
    return nowMs - this.orphanedSinceMs >= this.ctx.tuning.orphanedMs;
  }

  private granteeProgressing(nowMs: number): boolean {
    const grantee = this.granteeAgentId;
    if (grantee === undefined || grantee === this.ctx.self?.agentId) return false;
    const present = [...this.peers.usable(nowMs), ...this.peers.busyNow(nowMs, this.ctx.tuning.siblingWaitMs)];
    return present.some((p) => p.agentId === grantee && nowMs - p.grewAtMs < this.ctx.tuning.stallMs);
  }

  private request(planned: PlannedRequest): void {
    const { partial, signal, metrics } = this.ctx;
    const { peer, pieces, waitMs } = planned;
    const request = this.book.add(peer, pieces, waitMs > 0, performance.now());
    const callSignal = AbortSignal.any([signal, request.controller.signal]);
    const onData = (bytes: number): void => {
      const now = performance.now();
      this.book.data(request, bytes, now);
      this.ctx.budget?.received(bytes, now);
      this.progressed(now);
    };
    const run = async (): Promise<void> => {
      const iterator = this.ctx.pieces.readPieces(
        peer.address,
        { digest: partial.digest, pieceSize: partial.pieceSize, pieces, waitMs, blobSize: partial.size },
        callSignal,
        onData,
      );
      for await (const piece of iterator) {
        // Whole pieces, counted when they arrive (verified or not): what crossed between the zones.
        metrics.countPeerBytesByZone(peer.zone, this.zone, piece.data.length);
        const kept = await this.receive(peer, piece);
        // Settled only now: while the piece is being written it is neither held nor to be asked for again.
        this.book.settle(request, piece.index);
        if (!kept) {
          request.controller.abort();
          return;
        }
        this.cancelOutrun(piece.index);
      }
    };
    run()
      .catch((error: unknown) => {
        if (callSignal.aborted) return;
        const now = performance.now();
        const reason = isPeerError(error) ? error.code.replace(/^ERR_PEER_/, "").toLowerCase() : "unavailable";
        metrics.peerErrors.inc({ reason });
        if (isPeerError(error, "ERR_PEER_BUSY")) this.peers.busy(peer, now);
        else if (isPeerError(error, "ERR_PEER_MISSING_PIECE") && waitMs > 0) {
          // A relayed piece that did not arrive there in time: normal (the call itself waited relayWaitMs,
          // which bounds how often it happens). Leaving the peer alone now would send its zone's pieces
          // across zones.
          this.needRefresh = true;
        } else if (isPeerError(error, "ERR_PEER_MISSING_PIECE")) {
          // It claimed the piece (complete, or in its bitmap) and does not have it: stale at best, lying at
          // worst. It costs a bounded number of calls, with backoff, then it is given up for this blob.
          this.needRefresh = true;
          this.peers.failed(peer, now);
        } else {
          this.peers.failed(peer, now);
          this.ctx.logger.debug({ err: error, peer: peer.address }, "piece request failed");
        }
      })
      .finally(() => {
        this.book.finish(request);
        this.wakeUp();
      });
  }

  /**
   * A piece was just kept: the other calls still asking for it (a hedge or endgame duplicate, or the slow
   * call it duplicated) are cancelled when they owe nothing else this agent misses, so the rest of their
   * copy is not sent. A call that owes other pieces goes on (the held one then counts as already held).
   */
  private cancelOutrun(index: number): void {
    if (!this.ctx.partial.hasPiece(index)) return;
    for (const other of [...this.book.requestsFor(index)]) {
      const owes = other.pieces.filter((i) => this.book.requestsFor(i).includes(other));
      if (owes.every((i) => this.ctx.partial.hasPiece(i))) other.controller.abort();
    }
  }

  /** Verifies and keeps a piece (and releases it); false when the peer sent a bad one (and is dropped). */
  private async receive(peer: SwarmPeer, piece: ReceivedPiece): Promise<boolean> {
    const { partial, metrics, logger } = this.ctx;
    const index = piece.index;
    // Received bytes are counted by the PieceSource (PeerClient), which sees every byte off the wire.
    if (partial.hasPiece(index)) {
      metrics.peerBytesWasted.inc({ reason: "already_held" }, piece.data.length);
      piece.release();
      return true;
    }
    const expected = this.ctx.hashes[index];
    if (expected === undefined) {
      // Relayed before its hash reached the tracker: hold it until a lookup brings the hash.
      if (this.parked.has(index) || this.parked.size >= MAX_PARKED_PIECES) {
        metrics.peerBytesWasted.inc({ reason: "unverifiable" }, piece.data.length);
        piece.release();
      } else {
        this.parked.set(index, { peer, piece });
      }
      this.needRefresh = true;
      return true;
    }
    if (!sameHash(piece.sha256, expected)) {
      metrics.peerBytesWasted.inc({ reason: "bad" }, piece.data.length);
      piece.release();
      metrics.pieceVerificationFailures.inc();
      logger.warn(
        { peer: peer.address, agent: peer.agentId, piece: index, digest: partial.digest },
        "peer sent a piece that does not match its hash; dropping the peer for this blob",
      );
      this.peers.exclude(peer);
      // Whatever else it is sending is suspect too: stop those calls instead of verifying more bad pieces.
      this.book.abort(peer);
      return false;
    }
    const length = piece.data.length;
    try {
      await partial.writePiece(index, piece.data, piece.sha256);
    } finally {
      piece.release();
    }
    this.bytesFromPeers += length;
    this.peers.supplied(peer);
    this.progressed(performance.now());
    this.announcer.tick();
    return true;
  }

  private async refresh(): Promise<void> {
    this.lastRefreshMs = performance.now();
    this.needRefresh = false;
    // Cleared before the lookup: a notice that comes while it is under way asks for the next one.
    this.noticed = false;
    const { partial, signal } = this.ctx;
    try {
      // Holders it found bad are named: the tracker then answers with another claim about the blob if theirs is wrong.
      const excludedAgents = this.peers.excluded();
      const result = await this.ctx.tracker.lookup(partial.digest, {
        wantOriginGrant: false,
        signal,
        ...(excludedAgents.length > 0 ? { excludedAgents } : {}),
        ...(this.ctx.expectedSize === undefined ? {} : { expectedSize: this.ctx.expectedSize }),
      });
      // Counted like the fetcher's lookups: the agent's shoal_tracker_lookups_total is all of its lookups.
      this.ctx.metrics.trackerLookups.inc({ result: result.holders.length > 0 ? "holders" : "none" });
      this.ctx.knownPeers?.remember(partial.digest, result.holders, this.ctx.self?.agentId);
      this.apply(result, false);
    } catch (error) {
      if (signal.aborted) throw error;
      this.ctx.metrics.trackerLookups.inc({ result: "unavailable" });
      // Degraded: no tracker. The peers this download knows, and those they know, tell what they hold
      // (and the hashes of it) themselves.
      const candidates = [
        ...this.peers.all().map((p) => ({ agentId: p.agentId, peerAddress: p.address })),
        ...(this.ctx.knownPeers?.holdersOf(partial.digest) ?? []),
      ];
      const viaPeers = await lookupViaPeers({ digest: partial.digest, candidates, pieces: this.ctx.pieces, signal });
      if (viaPeers !== undefined) {
        this.ctx.knownPeers?.remember(partial.digest, viaPeers.exchanged, this.ctx.self?.agentId);
        this.apply(viaPeers.result, true);
      }
      this.ctx.logger.debug(
        { err: error, peers: viaPeers?.result.holders.length ?? 0 },
        "tracker unreachable during swarm download; going on with the peers it knows",
      );
    }
    await this.unpark();
  }

  /** Parked pieces whose hash is known now are verified and kept (or dropped with their peer). */
  private async unpark(): Promise<void> {
    for (const [index, { peer, piece }] of [...this.parked]) {
      if (this.ctx.hashes[index] === undefined) continue;
      this.parked.delete(index);
      await this.receive(peer, piece);
    }
  }

  /**
   * A notice's change, applied as a lookup answer would be but merged: its hashes fill unknown ones, its
   * holders are updated or added (never one this download found bad) and the others kept, the grantee is
   * taken. False when it does not fit this copy (another size or piece size: another claim), to be looked up.
   */
  private applyChange(change: BlobChange): boolean {
    const { partial } = this.ctx;
    if (change.size !== partial.size || change.pieceSize !== partial.pieceSize) return false;
    const { indices, bytes } = change.hashes;
    for (let i = 0; i < indices.length; i++) {
      const index = indices[i] ?? -1;
      if (index < 0 || index >= partial.pieceCount || this.ctx.hashes[index] !== undefined) continue;
      this.ctx.hashes[index] = bytes.subarray(i * PIECE_HASH_BYTES, (i + 1) * PIECE_HASH_BYTES);
    }
    this.peers.merge(
      change.holders.filter((h) => !this.peers.isBad(h.agentId) && h.agentId !== this.ctx.self?.agentId),
      performance.now(),
      this.ctx.random ?? Math.random,
    );
    this.granteeAgentId = change.granteeAgentId;
    this.deltas = true;
    this.ctx.metrics.peersKnown.set(this.peers.size);
    return true;
  }

  /** `degraded`: the answer comes from the peers (no tracker), which know nothing of grants. */
  private apply(result: LookupResult, degraded: boolean): void {
    if (result.pieceSize === this.ctx.partial.pieceSize && result.size === this.ctx.partial.size) {
      result.pieceHashes.forEach((hash, i) => {
        if (hash !== undefined && this.ctx.hashes[i] === undefined) this.ctx.hashes[i] = hash;
      });
      this.peers.update(
        result.holders.filter((h) => !this.peers.isBad(h.agentId)),
        performance.now(),
      );
      if (!degraded) this.granteeAgentId = result.origin.granteeAgentId;
      this.answeredHolders = result.holders.length;
    }
    this.ctx.metrics.peersKnown.set(this.peers.size);
  }

  private progressed(nowMs: number): void {
    this.lastProgressMs = nowMs;
    this.ownPauses.reset(nowMs);
  }

  /** Sleeps up to `ms` (woken early by wakeUp). */
  private async sleep(ms: number): Promise<void> {
    const start = performance.now();
    const woken = new Promise<void>((resolve) => {
      this.wake = resolve;
    });
    await Promise.race([woken, sleep(ms, undefined, { signal: this.ctx.signal }).catch(() => undefined)]);
    this.wake = undefined;
    // Woken late: the process did not run. Its sockets are read (one turn of the event loop) before the loop judges.
    if (performance.now() - start - ms > LATE_TIMER_MS) await yieldToIo(undefined, { signal: this.ctx.signal }).catch(() => undefined);
  }

  private wakeUp(): void {
    this.wake?.();
  }
}
