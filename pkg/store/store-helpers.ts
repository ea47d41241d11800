import { isDigest, type Digest } from "../oci/index.js";
import { StoreError } from "./errors.js";
import { MAX_PIECE_SIZE_BYTES } from "../piece/index.js";
import { raceSignal } from "../util/index.js";

/** Media types are stored in JSON sidecars and echoed as Content-Type: printable ASCII, bounded. */
const MEDIA_TYPE_PATTERN = /^[\x20-\x7e]{1,255}$/;

/**
 * Re-checks a digest at run time. The type is branded, but a cast can smuggle any string in, and digests
 * become file names: nothing but a valid digest may reach the file system.
 */
export function checkDigest(digest: Digest): Digest {
  if (!isDigest(digest)) {
    throw new StoreError("ERR_STORE_INVALID_ARGUMENT", `invalid digest ${JSON.stringify(String(digest).slice(0, 80))}`);
  }
  return digest;
}

export function checkPartialParams(size: number, pieceSize: number, mediaType: string | undefined): void {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new StoreError("ERR_STORE_INVALID_ARGUMENT", `invalid blob size ${String(size)}`);
  }
  // Small piece sizes are allowed (tests use them); the upper bound keeps a piece's buffer bounded.
  if (!Number.isSafeInteger(pieceSize) || pieceSize < 1 || pieceSize > MAX_PIECE_SIZE_BYTES) {
    throw new StoreError("ERR_STORE_INVALID_ARGUMENT", `invalid piece size ${String(pieceSize)}`);
  }
  if (mediaType !== undefined && !MEDIA_TYPE_PATTERN.test(mediaType)) {
    throw new StoreError("ERR_STORE_INVALID_ARGUMENT", `invalid media type ${JSON.stringify(mediaType.slice(0, 80))}`);
  }
}

export function isValidMediaType(value: unknown): value is string {
  return typeof value === "string" && MEDIA_TYPE_PATTERN.test(value);
}

/** The error a stream or wait fails with when its caller's AbortSignal fires. */
export function abortedBySignal(signal: AbortSignal): StoreError {
  return new StoreError("ERR_STORE_ABORTED", "operation aborted by its signal", { cause: signal.reason });
}

/** Wraps a failed file-system call; keeps StoreErrors (they already carry a code) as they are. */
export function ioError(message: string, cause: unknown): StoreError {
  if (cause instanceof StoreError) return cause;
  return new StoreError("ERR_STORE_IO", message, { cause });
}

export function errnoCode(error: unknown): string | undefined {
  if (typeof error === "object" && error !== null && "code" in error && typeof error.code === "string") return error.code;
  return undefined;
}

export function toError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}

/** Runs `fn` so that a synchronous throw becomes a rejection, as callers of a Promise-returning method expect. */
export function attempt<T>(fn: () => T): Promise<Awaited<T>> {
  return new Promise<Awaited<T>>((resolve) => {
    resolve(fn() as Awaited<T>);
  });
}

/** A readable byte range, both ends inclusive (HTTP style); `end` is start - 1 for an empty range. */
export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

/**
 * Resolves read options against a blob size. Only the empty blob has an empty range; any other range must
 * name at least one byte inside the blob.
 */
export function resolveRange(size: number, options?: { readonly start?: number; readonly end?: number }): ByteRange {
  const start = options?.start ?? 0;
  const end = options?.end ?? size - 1;
  const valid =
    Number.isSafeInteger(start) &&
    Number.isSafeInteger(end) &&
    start >= 0 &&
    end <= size - 1 &&
    (start <= end || (size === 0 && start === 0 && end === -1));
  if (!valid) {
    throw new StoreError("ERR_STORE_INVALID_ARGUMENT", `range ${String(start)}-${String(end)} is outside a blob of ${size} bytes`);
  }
  return { start, end };
}

/** Waits for `promise`, rejecting with ERR_STORE_ABORTED as soon as the signal fires (the work runs on). */
export function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return raceSignal(promise, signal, abortedBySignal);
}
