import { status } from "@grpc/grpc-js";
import type { Digest } from "../oci/index.js";
import { choosePieceSize, pieceCount, pieceSpan } from "../piece/index.js";
import type { BlobStore, PartialBlob } from "../store/index.js";
import { PeerStatus } from "./grpc-status.js";
import { MAX_PIECES_PER_CALL } from "./peer-service.js";

/** What this agent holds of a blob, as far as serving pieces is concerned. */
export interface HeldBlob {
  readonly size: number;
  readonly pieceSize: number;
  readonly pieceCount: number;
  /** Undefined for a complete blob. */
  readonly partial: PartialBlob | undefined;
}

/** The blob as held now (complete, or an open partial), or undefined. */
export async function findHeldBlob(store: BlobStore, digest: Digest): Promise<HeldBlob | undefined> {
  const info = await store.stat(digest);
  if (info !== undefined) {
    // Every agent derives a complete blob's piece size from its size, so all holders agree on it.
    const pieceSize = choosePieceSize(info.size);
    return { size: info.size, pieceSize, pieceCount: pieceCount(info.size, pieceSize), partial: undefined };
  }
  const partial = store.getPartial(digest);
  if (partial === undefined || partial.state === "aborted") return undefined;
  return { size: partial.size, pieceSize: partial.pieceSize, pieceCount: partial.pieceCount, partial };
}

/**
 * Whether a partial's piece can be streamed now. A partial never releases the blob's final byte before
 * commit() verified the whole digest (BlobStore invariant), so its last piece is servable only once the
 * digest is verified, even when the piece itself is held. Not later: making the blob durable (fsync)
 * after that takes seconds on a busy disk, and an image config (one piece, its last) waited for it at
 * its grantee while every other agent's runtime gave up on it.
 */
export function isServable(partial: PartialBlob, index: number): boolean {
  if (partial.state === "committed") return true;
  return partial.state === "open" && partial.hasPiece(index) && (index !== partial.pieceCount - 1 || partial.verified);
}

/** Resolves once the partial's digest is verified, or it settled (committed, or aborted: check its state). */
export function whenVerified(partial: PartialBlob, signal: AbortSignal): Promise<void> {
  const done = (): boolean => partial.verified || partial.state !== "open";
  if (done()) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const finish = (error?: unknown): void => {
      unsubscribe();
      signal.removeEventListener("abort", onAbort);
      if (error === undefined) resolve();
      else reject(error instanceof Error ? error : new Error("aborted", { cause: error }));
    };
    const onAbort = (): void => {
      finish(signal.reason);
    };
    const unsubscribe = partial.onProgress(() => {
      if (done()) finish();
    });
    signal.addEventListener("abort", onAbort, { once: true });
    if (signal.aborted) onAbort();
  });
}

/** The partial's bitmap as Stat reports it: pieces that can be served now (see isServable). */
export function servableBitmap(partial: PartialBlob): Uint8Array {
  const bitmap = partial.bitmap();
  const last = partial.pieceCount - 1;
  if (partial.state !== "committed" && !partial.verified && last >= 0) {
    const byte = last >> 3;
    bitmap[byte] = (bitmap[byte] ?? 0) & ~(0x80 >> (last & 7));
  }
  return bitmap;
}

/**
 * Waits until piece `index` of an open partial can be served, for at most `waitMs`. Returns false when the
 * partial is gone (aborted, or committed and then evicted: the caller looks again); throws PeerStatus
 * FAILED_PRECONDITION when the piece did not arrive in time.
 */
export async function waitServable(partial: PartialBlob, index: number, waitMs: number, signal: AbortSignal): Promise<void> {
  const deadline = performance.now() + waitMs;
  for (;;) {
    signal.throwIfAborted();
    if (partial.state === "aborted") throw new PeerStatus(status.FAILED_PRECONDITION, `blob ${partial.digest} is no longer held`);
    if (isServable(partial, index)) return;
    const remainingMs = deadline - performance.now();
    if (remainingMs <= 0) throw new PeerStatus(status.FAILED_PRECONDITION, `piece ${index} of ${partial.digest} is not held`);
    await waitForProgress(partial, index, remainingMs, signal);
  }
}

/** Resolves when the piece may have become servable, or after `timeoutMs`; rejects if `signal` aborts. */
function waitForProgress(partial: PartialBlob, index: number, timeoutMs: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const local = new AbortController();
    let done = false;
    const finish = (error?: unknown): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      local.abort();
      if (error === undefined) resolve();
      else reject(error instanceof Error ? error : new Error("aborted", { cause: error }));
    };
    const onAbort = (): void => {
      finish(signal.reason);
    };
    const timer = setTimeout(finish, timeoutMs);
    signal.addEventListener("abort", onAbort, { once: true });
    // The last piece becomes servable once the digest is verified (or the partial settles: the caller
    // looks again); any other once it is held.
    const ready = index === partial.pieceCount - 1 ? whenVerified(partial, local.signal) : partial.waitForPiece(index, local.signal);
    ready.then(
      () => {
        finish();
      },
      (error: unknown) => {
        if (local.signal.aborted) return;
        finish(new PeerStatus(status.FAILED_PRECONDITION, `partial blob ${partial.digest} was aborted`, { cause: error }));
      },
    );
    if (signal.aborted) onAbort();
  });
}

/** The bytes a checked read asks for (its pieces' spans; the last piece of a blob may be short). */
export function readBytes(
  request: { readonly pieces: readonly number[] },
  blob: { readonly size: number; readonly pieceSize: number },
): number {
  let bytes = 0;
  for (const index of request.pieces) {
    const span = pieceSpan(index, blob.size, blob.pieceSize);
    bytes += span.end - span.start;
  }
  return bytes;
}

/** A read's request checked against the blob as held: the piece size, 1 to MAX_PIECES_PER_CALL pieces, all in range. */
export function checkPieces(request: { readonly pieceSize: number; readonly pieces: readonly number[] }, blob: HeldBlob): void {
  if (request.pieceSize !== blob.pieceSize) {
    throw new PeerStatus(status.INVALID_ARGUMENT, `piece size ${request.pieceSize} does not match ${blob.pieceSize}`);
  }
  if (request.pieces.length === 0 || request.pieces.length > MAX_PIECES_PER_CALL) {
    throw new PeerStatus(status.INVALID_ARGUMENT, `a call asks for 1 to ${MAX_PIECES_PER_CALL} pieces, not ${request.pieces.length}`);
  }
  for (const index of request.pieces) {
    if (index >= blob.pieceCount) throw new PeerStatus(status.INVALID_ARGUMENT, `piece ${index} out of range 0..${blob.pieceCount - 1}`);
  }
}
