import type { Digest } from "../oci/index.js";
import type { KnownPeer } from "./known-peers.js";

export interface PieceReadRequest {
  readonly digest: Digest;
  readonly pieceSize: number;
  /** In the order they should arrive. */
  readonly pieces: readonly number[];
  /** How long the peer may wait for pieces of a partial blob still arriving there; 0 = only what it holds now. */
  readonly waitMs: number;
  /**
   * The blob's size as the asker knows it. A read of at most SMALL_READ_BYTES in all (an image config)
   * then goes on a call of its own rather than the pair's Exchange stream, where it would wait behind the
   * megabytes of layer pieces already queued on that stream.
   */
  readonly blobSize?: number | undefined;
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
/** What a peer holds of a blob (Stat). */
export interface PeerBlobStat {
  readonly complete: boolean;
  readonly size: number;
  readonly pieceSize: number;
  /** Pieces the peer can serve now, MSB first (see PieceBitmap); empty when complete. */
  readonly bitmap: Uint8Array;
  /** The hashes of the pieces it holds, as it claims them (index-aligned; undefined where not given). */
  readonly pieceHashes: readonly (Uint8Array | undefined)[];
  /** Other holders it knows of (peer exchange). */
  readonly holders: readonly KnownPeer[];
}

export interface PieceSource {
  /** What `peerAddress` holds of `digest`; undefined when it holds nothing of it. */
  stat(peerAddress: string, digest: Digest, signal: AbortSignal): Promise<PeerBlobStat | undefined>;
  /** `onData` is told of every batch of bytes as it arrives: progress, before whole pieces are there. */
  readPieces(
    peerAddress: string,
    request: PieceReadRequest,
    signal: AbortSignal,
    onData?: (bytes: number) => void,
  ): AsyncIterable<ReceivedPiece>;
}
