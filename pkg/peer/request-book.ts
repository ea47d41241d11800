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

/**
 * The requests of one download in flight: which pieces are asked of whom, since when, and whether the
 * calls are still receiving bytes. The only place where requests are added and settled, so per-peer
 * in-flight counts and the piece → requests index never disagree.
 */
export class RequestBook {
  private readonly byPiece = new Map<number, PieceRequest[]>();
  private readonly all = new Set<PieceRequest>();

  /**
   * `newController`: each call's AbortController (the simulator, whose calls are never cancelled through
   * a signal, hands out one shared controller).
   */
  constructor(private readonly newController: () => AbortController = () => new AbortController()) {}

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
    return request;
  }

  /** `request` no longer waits for piece `index` (delivered, or the call ended). Idempotent. */
  settle(request: PieceRequest, index: number): void {
    const running = this.byPiece.get(index);
    if (!running?.includes(request)) return;
    request.peer.inflight--;
    const rest = running.filter((r) => r !== request);
    if (rest.length === 0) this.byPiece.delete(index);
    else this.byPiece.set(index, rest);
  }

  /** The call ended: every piece it still owed is unrequested. */
  finish(request: PieceRequest): void {
    for (const index of request.pieces) this.settle(request, index);
    this.all.delete(request);
  }

  /** Bytes arrived on `request`'s call. */
  data(request: PieceRequest, bytes: number, nowMs: number): void {
    request.lastDataMs = nowMs;
    request.peer.dataAtMs = nowMs;
    request.receivedBytes += bytes;
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
