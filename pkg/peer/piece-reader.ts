import type { Readable } from "node:stream";
import { status } from "@grpc/grpc-js";
import type { Digest } from "../oci/index.js";
import { choosePieceSize, pieceCount, pieceSpan } from "../piece/index.js";
import type { BlobStore, PartialBlob } from "../store/index.js";
import { PeerStatus } from "./grpc-status.js";

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
 * blob is complete, even when the piece itself is held.
 */
export function isServable(partial: PartialBlob, index: number): boolean {
  if (partial.state === "committed") return true;
  return partial.state === "open" && partial.hasPiece(index) && index !== partial.pieceCount - 1;
}

/** The partial's bitmap as Stat reports it: pieces that can be served now (see isServable). */
export function servableBitmap(partial: PartialBlob): Uint8Array {
  const bitmap = partial.bitmap();
  const last = partial.pieceCount - 1;
  if (partial.state !== "committed" && last >= 0) {
    const byte = last >> 3;
    bitmap[byte] = (bitmap[byte] ?? 0) & ~(0x80 >> (last & 7));
  }
  return bitmap;
}

export interface OpenPiecesOptions {
  readonly store: BlobStore;
  readonly digest: Digest;
  readonly blob: HeldBlob;
  /** First piece of a run of consecutive pieces. */
  readonly first: number;
  /** Pieces in the run; more than one only for a complete blob (see planRuns). */
  readonly count: number;
  /** How long to wait for a piece of a partial blob that is not servable yet. */
  readonly waitMs: number;
  readonly signal: AbortSignal;
}

/** Open pieces: their bytes, and whether they come from a partial (whose abort is "piece gone", not a fault). */
export interface OpenedPieces {
  readonly stream: Readable;
  readonly pieces: readonly PieceLength[];
  readonly fromPartial: boolean;
}

export interface PieceLength {
  readonly index: number;
  readonly length: number;
}

/**
 * Splits requested pieces into runs read with one store stream each: consecutive ascending pieces of a
 * complete blob share a stream (one file open per run instead of per piece); pieces of a partial blob
 * are opened one by one, because each may have to be waited for.
 */
export function planRuns(pieces: readonly number[], blob: HeldBlob): { first: number; count: number }[] {
  const runs: { first: number; count: number }[] = [];
  for (const index of pieces) {
    const last = runs.at(-1);
    if (blob.partial === undefined && last !== undefined && last.first + last.count === index) last.count++;
    else runs.push({ first: index, count: 1 });
  }
  return runs;
}

/**
 * Opens a run of pieces for reading: from the complete blob, or (a single piece) from the partial once it
 * is held there, waiting up to `waitMs` for it. Throws PeerStatus FAILED_PRECONDITION when it is not here.
 */
export async function openPieces(options: OpenPiecesOptions): Promise<OpenedPieces> {
  const { store, digest, blob, first, count, signal } = options;
  const pieces: PieceLength[] = [];
  for (let index = first; index < first + count; index++) {
    const span = pieceSpan(index, blob.size, blob.pieceSize);
    pieces.push({ index, length: span.end - span.start });
  }
  const range = { start: pieceSpan(first, blob.size, blob.pieceSize).start, end: pieceSpan(first + count - 1, blob.size, blob.pieceSize).end - 1, signal };
  const deadline = performance.now() + options.waitMs;
  for (;;) {
    signal.throwIfAborted();
    if ((await store.stat(digest)) !== undefined) {
      return { stream: await store.createReadStream(digest, range), pieces, fromPartial: false };
    }
    const partial = store.getPartial(digest);
    if (partial === undefined || partial.state === "aborted" || count !== 1) {
      throw new PeerStatus(status.FAILED_PRECONDITION, `blob ${digest} is no longer held`);
    }
    // A committed partial's stream reads the complete blob.
    if (isServable(partial, first)) return { stream: partial.createReadStream(range), pieces, fromPartial: true };
    const remainingMs = deadline - performance.now();
    if (remainingMs <= 0) throw new PeerStatus(status.FAILED_PRECONDITION, `piece ${first} of ${digest} is not held`);
    await waitForProgress(store, partial, first, remainingMs, signal);
  }
}

/** Resolves when the piece may have become servable, or after `timeoutMs`; rejects if `signal` aborts. */
function waitForProgress(store: BlobStore, partial: PartialBlob, index: number, timeoutMs: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const local = new AbortController();
    let unsubscribe: (() => void) | undefined;
    let done = false;
    const finish = (error?: unknown): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      unsubscribe?.();
      local.abort();
      if (error === undefined) resolve();
      else reject(error instanceof Error ? error : new Error("aborted", { cause: error }));
    };
    const onAbort = (): void => {
      finish(signal.reason);
    };
    const timer = setTimeout(finish, timeoutMs);
    signal.addEventListener("abort", onAbort, { once: true });
    if (index === partial.pieceCount - 1) {
      // The last piece becomes servable at commit, which the store announces as "added".
      unsubscribe = store.subscribe((event) => {
        if (event.type === "added" && event.blob.digest === partial.digest) finish();
      });
      // It may have committed between the caller's check and the subscription.
      if (partial.state !== "open") finish();
    } else {
      partial.waitForPiece(index, local.signal).then(
        () => {
          finish();
        },
        (error: unknown) => {
          if (local.signal.aborted) return;
          finish(new PeerStatus(status.FAILED_PRECONDITION, `partial blob ${partial.digest} was aborted`, { cause: error }));
        },
      );
    }
    if (signal.aborted) onAbort();
  });
}
