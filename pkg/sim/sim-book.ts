import type { PieceRequest, SwarmPeer } from "../peer/index.js";

/** Simulated calls are never cancelled through a signal; every request shares this one controller. */
const UNUSED_CONTROLLER = new AbortController();

/**
 * The requests of one simulated download in flight, in the shape the PiecePicker reads (PieceRequest):
 * which pieces are asked of whom, since when, and when bytes last arrived. Same rules as the agent's:
 * a piece stays requested until it is delivered or its call ends; per-peer in-flight counts follow.
 */
export class SimBook {
  private readonly byPiece = new Map<number, PieceRequest[]>();
  readonly all = new Set<PieceRequest>();

  add(peer: SwarmPeer, pieces: readonly number[], relay: boolean, nowMs: number): PieceRequest {
    const request: PieceRequest = {
      peer,
      pieces,
      startedMs: nowMs,
      lastDataMs: nowMs,
      receivedBytes: 0,
      relay,
      controller: UNUSED_CONTROLLER,
    };
    this.all.add(request);
    for (const index of pieces) {
      const running = this.byPiece.get(index);
      if (running === undefined) this.byPiece.set(index, [request]);
      else running.push(request);
    }
    peer.inflight += pieces.length;
    return request;
  }

  settle(request: PieceRequest, index: number): void {
    const running = this.byPiece.get(index);
    const at = running?.indexOf(request) ?? -1;
    if (running === undefined || at < 0) return;
    request.peer.inflight--;
    running.splice(at, 1);
    if (running.length === 0) this.byPiece.delete(index);
  }

  finish(request: PieceRequest): void {
    for (const index of request.pieces) this.settle(request, index);
    this.all.delete(request);
  }

  requestsFor(index: number): readonly PieceRequest[] {
    return this.byPiece.get(index) ?? NONE;
  }
}

const NONE: readonly PieceRequest[] = [];
