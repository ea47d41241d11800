import { createHash, type Hash } from "node:crypto";
import { SequentialPieceHasher } from "../piece/index.js";

/** A piece whose hash a ContentHasher finished. */
export interface HashedPiece {
  readonly index: number;
  readonly sha256: Uint8Array;
}

/** What an update feeds: the blob's running digest, the sequential piece hashes, or both. */
export interface HashTargets {
  readonly blob: boolean;
  readonly pieces: boolean;
}

export interface ContentHasherParams {
  /** Digest algorithm of the blob (`sha256`, `sha512`). */
  readonly algorithm: string;
  readonly size: number;
  readonly pieceSize: number;
}

/**
 * The two hashes a partial blob takes of the bytes it writes: the running digest of its contiguous prefix,
 * and the SHA-256 of each piece written in order from its first byte (SequentialPieceHasher's rules). Calls
 * are made one at a time (the partial's queue); `bytes` is not kept after the returned promise settles.
 */
export interface ContentHasher {
  /**
   * Where to put bytes before writing and hashing them: the first bytes of `bytes` (all, or as many as
   * fit) in memory the hasher reads without a copy, valid until the next stage() or update(). Writing the
   * staged view and updating with it takes the bytes from memory once.
   */
  stage(bytes: Uint8Array): Uint8Array;
  /**
   * Whether the blob digest can be fed now without waiting for the hasher to start (a hash thread takes
   * 36–79 ms to start on an idle machine, ~0.5 s on a loaded one). Piece hashes never wait for it: a hasher
   * that is not ready takes them on the calling thread. A partial feeds the digest only when ready, and
   * hashes the bytes it skipped from storage afterwards (its catch-up).
   */
  readonly ready: boolean;
  /** Resolves once `ready` is true. */
  whenReady(): Promise<void>;
  /** Feeds `bytes` found at blob offset `position`; resolves with the pieces this completed. */
  update(position: number, bytes: Uint8Array, targets: HashTargets): Promise<readonly HashedPiece[]>;
  /** The running digest, hex: call once, after the last update. */
  digest(): Promise<string>;
  /** Releases the hash state (idempotent). */
  close(): void;
}

/** Hashes on the calling thread: for small blobs, where a message to a worker costs more than the hash. */
export class InlineContentHasher implements ContentHasher {
  private readonly hash: Hash;
  private readonly pieces: SequentialPieceHasher;
  private completed: HashedPiece[] = [];

  constructor(params: ContentHasherParams) {
    this.hash = createHash(params.algorithm);
    this.pieces = new SequentialPieceHasher(params.size, params.pieceSize, (index, sha256) => {
      this.completed.push({ index, sha256 });
    });
  }

  readonly ready = true;

  whenReady(): Promise<void> {
    return Promise.resolve();
  }

  stage(bytes: Uint8Array): Uint8Array {
    return bytes;
  }

  update(position: number, bytes: Uint8Array, targets: HashTargets): Promise<readonly HashedPiece[]> {
    return Promise.resolve(this.feed(position, bytes, targets));
  }

  digest(): Promise<string> {
    return Promise.resolve(this.finish());
  }

  /** update(), synchronously (the hash worker runs this). */
  feed(position: number, bytes: Uint8Array, targets: HashTargets): HashedPiece[] {
    if (targets.blob) this.hash.update(bytes);
    if (!targets.pieces) return [];
    this.pieces.update(position, bytes);
    const completed = this.completed;
    this.completed = [];
    return completed;
  }

  /** digest(), synchronously. */
  finish(): string {
    return this.hash.digest("hex");
  }

  close(): void {
    this.completed = [];
  }
}
