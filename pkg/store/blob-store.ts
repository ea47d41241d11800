import type { Readable } from "node:stream";
import type { Digest } from "../oci/index.js";

/** A complete blob whose digest has been verified. */
export interface BlobInfo {
  readonly digest: Digest;
  readonly size: number;
  /** Set for manifests (the registry needs their Content-Type); undefined for plain blobs. */
  readonly mediaType?: string | undefined;
}

/** A partial blob as persisted: enough for the tracker to announce it after a restart. */
export interface PartialInfo {
  readonly digest: Digest;
  readonly size: number;
  readonly pieceSize: number;
  /** Bit i set = piece i held (MSB first), see PieceBitmap. */
  readonly bitmap: Uint8Array;
}

export interface ReadOptions {
  /** First byte, default 0. */
  readonly start?: number;
  /** Last byte, inclusive (HTTP style), default size - 1. */
  readonly end?: number;
  readonly signal?: AbortSignal;
}

/**
 * Positional reads of one blob into the caller's buffers (no allocation per read: the peer server reads
 * straight into the messages it sends). A complete blob stays pinned against eviction until `close`.
 */
export interface BlobReader {
  readonly size: number;
  /** Fills `target` with the blob's bytes at `position`. Throws StoreError when they are not there. */
  read(target: Uint8Array, position: number): Promise<void>;
  close(): Promise<void>;
}

/** The SHA-256 of every piece of a complete blob, for that piece size. */
export interface PieceHashList {
  readonly pieceSize: number;
  readonly hashes: readonly Uint8Array[];
}

export interface StoreUsage {
  /** Bytes of complete blobs plus bytes reserved by open partial blobs. */
  readonly usedBytes: number;
  /** 0 = unlimited. */
  readonly quotaBytes: number;
  readonly blobs: number;
  readonly partials: number;
}

export type StoreEvent =
  /** A blob became complete and visible (commit, or found by the start-up rescan). */
  | { readonly type: "added"; readonly blob: BlobInfo }
  /** A complete blob is gone: evicted, deleted, or found corrupt. */
  | { readonly type: "removed"; readonly digest: Digest; readonly reason: "evicted" | "deleted" | "corrupt" };

export interface OpenPartialOptions {
  readonly pieceSize: number;
  readonly mediaType?: string;
  /**
   * The bytes will come in order from one stream (the origin): hash them in the process's hash worker
   * thread when the blob is large, where the writer's batches are read in place. Pieces from peers arrive
   * with their hashes already taken, and copying them to the worker cost more than it saved (npm start:
   * +12-15 MB per agent, +0.7 CPU-s/GB), so partials opened without it hash on the event loop.
   */
  readonly sequential?: boolean;
}

/**
 * Content-addressed blob storage. Implementations: DiskBlobStore (production), MemoryBlobStore (tests);
 * both pass the conformance suite in ./testing/conformance.ts.
 *
 * Invariants every implementation keeps:
 * - A blob is visible (stat, createReadStream, list) only after its whole content matched its digest.
 * - No reader ever receives the final byte of a blob whose digest has not been verified.
 * - Eviction never removes a blob that has an open read stream or an open partial.
 */
export interface BlobStore {
  /** Info about a complete blob, or undefined. Cheap; does not count as a use for LRU. */
  stat(digest: Digest): Promise<BlobInfo | undefined>;

  /**
   * Streams a complete blob, or the inclusive range [start, end] of it. The blob is pinned against
   * eviction until the stream ends or is destroyed, and counts as used now for LRU.
   * Throws StoreError ERR_STORE_BLOB_NOT_FOUND, or ERR_STORE_INVALID_ARGUMENT for a range outside the blob.
   */
  createReadStream(digest: Digest, options?: ReadOptions): Promise<Readable>;

  /**
   * Opens a complete blob for positional reads (pinned until the reader is closed). A blob not verified
   * since a restart is verified first. Throws ERR_STORE_BLOB_NOT_FOUND.
   */
  openReader(digest: Digest, signal?: AbortSignal): Promise<BlobReader>;

  /**
   * The piece hashes of a complete blob for its standard piece size (choosePieceSize): recorded when the
   * blob was written, or computed from the blob once (blobs stored without them) and then recorded.
   * Undefined when the blob is not held.
   */
  pieceHashes(digest: Digest, signal?: AbortSignal): Promise<PieceHashList | undefined>;

  /**
   * Starts a partial blob, or returns the one already open for this digest, or resumes one persisted
   * by an earlier process (same size and piece size; otherwise the old one is discarded).
   * The blob's `size` is reserved against the quota, evicting least-recently-used blobs if needed.
   * Throws ERR_STORE_BLOB_EXISTS if the blob is already complete, ERR_STORE_CONFLICT if an open
   * partial has another size or piece size, ERR_STORE_QUOTA_EXCEEDED if it cannot fit.
   */
  openPartial(digest: Digest, size: number, options: OpenPartialOptions): Promise<PartialBlob>;

  /** The partial currently open for this digest in this process, if any. */
  getPartial(digest: Digest): PartialBlob | undefined;

  /** Every complete blob. */
  list(): Promise<BlobInfo[]>;

  /** Every partial blob, open or persisted. */
  listPartials(): Promise<PartialInfo[]>;

  /** Removes a complete blob (once its readers are done) and any partial of it. Returns whether anything existed. */
  delete(digest: Digest): Promise<boolean>;

  usage(): StoreUsage;

  /** Subscribes to blob added/removed events (the tracker announce/withdraw feed). Returns an unsubscribe function. */
  subscribe(listener: (event: StoreEvent) => void): () => void;

  /** Flushes persisted state, aborts open partials (keeping their data for resume) and releases resources. */
  close(): Promise<void>;
}

/**
 * A blob being assembled. Data arrives either sequentially from the origin (`append`) or as whole
 * pieces from peers (`writePiece`), in any mix. Readers may tail it while it fills.
 */
export interface PartialBlob {
  readonly digest: Digest;
  readonly size: number;
  readonly pieceSize: number;
  readonly pieceCount: number;
  readonly mediaType: string | undefined;
  readonly state: "open" | "committed" | "aborted";
  /**
   * commit() verified the whole digest and the partial was not aborted: the final byte may be read from
   * here on, while commit() still makes the blob durable (fsync, rename), which on a busy disk takes
   * seconds.
   */
  readonly verified: boolean;

  hasPiece(index: number): boolean;
  /** Number of pieces held. */
  readonly heldPieces: number;
  /** A copy of the piece bitmap (see PieceBitmap for the bit order). */
  bitmap(): Uint8Array;

  /**
   * Offset at which `append` continues: the end of the contiguous run of held pieces from the start,
   * or further if appends went past it. An origin fetch resumes with `Range: bytes=<appendOffset>-`.
   */
  readonly appendOffset: number;

  /**
   * Writes the next bytes of a sequential stream at `offset` (default `appendOffset`). A stream passes
   * its own position from the second chunk on: `appendOffset` jumps ahead when pieces written by
   * `writePiece` join the contiguous prefix, while the stream still delivers those bytes (which are
   * skipped). Pieces whose bytes are then all written become held. Resolves once the bytes are handed to
   * the OS (not necessarily fsync'd).
   */
  append(chunk: Uint8Array, offset?: number): Promise<void>;

  /**
   * Writes a whole piece (length = piece length; the last piece may be shorter) and marks it held.
   * Writing a piece that is already held is a no-op. The caller has already checked its hash; `sha256`
   * is that hash, recorded with the piece (computed here when omitted).
   */
  writePiece(index: number, data: Uint8Array, sha256?: Uint8Array): Promise<void>;

  /**
   * The SHA-256 of a held piece: as checked by writePiece, or computed while `append` wrote it. Undefined
   * for a piece not held, or whose bytes came in without it (resumed after a restart: then it is computed
   * at commit).
   */
  pieceHash(index: number): Uint8Array | undefined;

  /**
   * Positional reads of the bytes held so far (and of the whole blob once committed). Reading bytes not
   * held, or the blob's final byte before commit, throws ERR_STORE_INVALID_ARGUMENT.
   */
  openReader(): BlobReader;

  /**
   * Streams [start, end] (inclusive), waiting for bytes that have not arrived yet. The final byte of the
   * blob is released only after commit() verified the digest. If the partial is aborted, the stream is
   * destroyed with the abort reason. Does not pin anything after commit: it switches to the complete blob.
   */
  createReadStream(options?: ReadOptions): Readable;

  /** Resolves once the partial is committed, or aborted and its data kept or discarded; then check `state`. */
  whenSettled(): Promise<void>;

  /** Calls `listener` after any progress (bytes, pieces, verification, commit, abort); returns the unsubscribe function. */
  onProgress(listener: () => void): () => void;

  /** Resolves when piece `index` is held; rejects with the abort reason if the partial is aborted. */
  waitForPiece(index: number, signal?: AbortSignal): Promise<void>;

  /**
   * Once every piece is held: verifies the whole-blob digest and makes the blob visible atomically.
   * On mismatch it aborts (discarding the data) and throws ERR_STORE_DIGEST_MISMATCH.
   * Throws ERR_STORE_INCOMPLETE if pieces are missing. Idempotent after success.
   */
  commit(): Promise<BlobInfo>;

  /**
   * Gives up on this partial: readers and waiters fail with `reason`. With keepData the held pieces stay
   * persisted for a later openPartial to resume; otherwise everything is deleted.
   */
  abort(reason: Error, options?: { keepData?: boolean }): Promise<void>;
}
