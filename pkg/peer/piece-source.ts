import type { Digest } from "../oci/index.js";

export interface PieceReadRequest {
  readonly digest: Digest;
  readonly pieceSize: number;
  /** In the order they should arrive. */
  readonly pieces: readonly number[];
  /** How long the peer may wait for pieces of a partial blob still arriving there; 0 = only what it holds now. */
  readonly waitMs: number;
}

/** One whole piece as received; not yet verified against its expected hash. */
export interface ReceivedPiece {
  readonly index: number;
  /** Valid until release(): it lives in a reused buffer. */
  readonly data: Buffer;
  /** SHA-256 of `data`, computed while it arrived. */
  readonly sha256: Uint8Array;
  /** Gives the buffer back for reuse; call exactly once, after the last use of `data`. */
  release(): void;
}

/**
 * How the swarm scheduler reads pieces from other agents. Implementation: PeerClient (gRPC). The
 * iterator yields whole pieces in request order and throws PeerError when the peer fails, refuses
 * (ERR_PEER_BUSY for a full upload cap, ERR_PEER_MISSING_PIECE) or the signal aborts. Pieces the
 * consumer takes are its to release; the iterator releases those it never handed over.
 */
export interface PieceSource {
  /** `onData` is told of every batch of bytes as it arrives: progress, before whole pieces are there. */
  readPieces(peerAddress: string, request: PieceReadRequest, signal: AbortSignal, onData?: (bytes: number) => void): AsyncIterable<ReceivedPiece>;
}
