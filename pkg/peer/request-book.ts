import type { SwarmPeer } from "./swarm-peers.js";

/** One ReadPieces call in flight, as the scheduler tracks it. */
export interface PieceRequest {
  readonly peer: SwarmPeer;
  readonly pieces: readonly number[];
  readonly startedMs: number;
  /** When the call last received bytes (startedMs until then): progress, however slow, is not a stall. */
  lastDataMs: number;
  /** Bytes the call has received so far. */
  receivedBytes: number;
  /** Pieces the peer may not hold yet (relayed while they arrive there): no evidence the swarm can finish. */
  readonly relay: boolean;
  readonly controller: AbortController;
}

/** Pauses in a call's data count half as much after this long: a busy spell is forgotten in seconds. */
export const DATA_GAP_HALF_LIFE_MS = 5_000;
/** A call is silent only after this many times the pauses its download has lately seen inside calls… */
export const DATA_GAP_PATIENCE_FACTOR = 3;
/** …but never waits longer than this for it (a peer that is gone is cut by the client's stall timeout). */
export const MAX_DATA_GAP_PATIENCE_MS = 4_000;

/**
 * The requests of one download in flight: which pieces are asked of whom, since when, and whether the
 * calls are still receiving bytes. The only place where requests are added and settled, so per-peer
 * in-flight counts and the piece → requests index never disagree.
 */
export class RequestBook {
  private readonly byPiece = new Map<number, PieceRequest[]>();
  private readonly all = new Set<PieceRequest>();
  /** The longest pause inside a non-relay call lately (decaying, DATA_GAP_HALF_LIFE_MS), and when it was last updated. */
  private gapMs = 0;
  private gapAtMs = 0;

  /**
   * `newController`: each call's AbortController (the simulator, whose calls are never cancelled through
   * a signal, hands out one shared controller).
   */
  constructor(
    private readonly newController: () => AbortController = () => new AbortController(),
    /** Told of every piece asked for and every one settled (the download's BudgetShare); none in the simulator. */
    private readonly counter?: { take(pieces: number): void; give(pieces: number): void },
  ) {}

  add(peer: SwarmPeer, pieces: readonly number[], relay: boolean, nowMs: number): PieceRequest {
    const request: PieceRequest = {
      peer,
      pieces,
      startedMs: nowMs,
      lastDataMs: nowMs,
      receivedBytes: 0,
      relay,
      controller: this.newController(),
    };
    this.all.add(request);
    for (const index of pieces) this.byPiece.set(index, [...(this.byPiece.get(index) ?? []), request]);
    peer.inflight += pieces.length;
    this.counter?.take(pieces.length);
    return request;
  }

  /** `request` no longer waits for piece `index` (delivered, or the call ended). Idempotent. */
  settle(request: PieceRequest, index: number): void {
    const running = this.byPiece.get(index);
    if (!running?.includes(request)) return;
    request.peer.inflight--;
    this.counter?.give(1);
    const rest = running.filter((r) => r !== request);
    if (rest.length === 0) this.byPiece.delete(index);
    else this.byPiece.set(index, rest);
  }

  /** The call ended: every piece it still owed is unrequested. */
  finish(request: PieceRequest): void {
    for (const index of request.pieces) this.settle(request, index);
    this.all.delete(request);
  }

  /**
   * Bytes arrived on `request`'s call. A pause between bytes of a call that was already receiving (not a
   * relay, which waits for its peer to receive the piece) is what this machine and its peers take to move
   * bytes right now: on a busy machine it grows, and `patienceMs` with it.
   */
  data(request: PieceRequest, bytes: number, nowMs: number): void {
    if (request.receivedBytes > 0 && !request.relay) {
      this.gapMs = Math.max(nowMs - request.lastDataMs, this.decayedGapMs(nowMs));
      this.gapAtMs = nowMs;
    }
    request.lastDataMs = nowMs;
    request.peer.dataAtMs = nowMs;
    request.receivedBytes += bytes;
  }

  /**
   * How long a call must be silent before it counts as stopped, for a base of `baseMs` (the hedge or
   * endgame setting): the base, or DATA_GAP_PATIENCE_FACTOR times the longest recent pause inside calls
   * if that is longer (at most MAX_DATA_GAP_PATIENCE_MS). Silence that is the machine's load, not a peer's
   * loss, is then not answered with a duplicate, which would only add bytes to a machine already short of CPU.
   */
  patienceMs(baseMs: number, nowMs: number): number {
    return Math.max(baseMs, Math.min(MAX_DATA_GAP_PATIENCE_MS, DATA_GAP_PATIENCE_FACTOR * this.decayedGapMs(nowMs)));
  }

  private decayedGapMs(nowMs: number): number {
    if (this.gapMs === 0) return 0;
    return this.gapMs * 0.5 ** (Math.max(0, nowMs - this.gapAtMs) / DATA_GAP_HALF_LIFE_MS);
  }

  requestsFor(index: number): readonly PieceRequest[] {
    return this.byPiece.get(index) ?? [];
  }

  /** Whether the call is still in flight. */
  has(request: PieceRequest): boolean {
    return this.all.has(request);
  }

  isRequested(index: number): boolean {
    return this.byPiece.has(index);
  }

  /** Calls in flight. */
  get size(): number {
    return this.all.size;
  }

  requests(): IterableIterator<PieceRequest> {
    return this.all.values();
  }

  /**
   * Whether the download is moving, however slowly: a call that received bytes within `stallMs`, a fresh
   * request for pieces its peer holds (a silent one is cut by the client's stall timeout), or a relay from a
   * peer that gained pieces within `stallMs` (a downloader whose share this agent waits for). Relays among
   * downloaders that all wait for the same missing pieces are not: each would keep the others' hope alive
   * forever.
   */
  moving(nowMs: number, stallMs: number): boolean {
    for (const request of this.all) {
      if (request.receivedBytes > 0 && nowMs - request.lastDataMs < stallMs) return true;
      if (request.relay ? nowMs - request.peer.grewAtMs < stallMs : nowMs - request.startedMs < stallMs) return true;
    }
    return false;
  }

  /** Cancels `peer`'s calls (it sent a bad piece), or every call when no peer is given. */
  abort(peer?: SwarmPeer): void {
    for (const request of this.all) if (peer === undefined || request.peer === peer) request.controller.abort();
  }
}
