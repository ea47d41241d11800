import { createHash, type Hash } from "node:crypto";
import { Readable } from "node:stream";
import { digestAlgorithm, type Digest } from "../oci/index.js";
import { StoreError } from "./errors.js";
import { FIRST_READ_CHUNK_BYTES, READ_CHUNK_BYTES, recycleReadChunk, takeReadChunk } from "./read-chunks.js";
import { abortedBySignal, type ByteRange, toError } from "./store-helpers.js";

/** Random access to a blob's bytes; `close` releases it. */
export interface RangeSource {
  /** Fills `target` with the bytes at `position`. */
  readInto(target: Uint8Array, position: number): Promise<void>;
  close(): Promise<void>;
}

/** `length` bytes at `position` of `source`, in a chunk of its own (streams hand their chunks on to consumers). */
async function readChunk(source: RangeSource, position: number, length: number): Promise<Uint8Array> {
  const chunk = takeReadChunk(length);
  try {
    await source.readInto(chunk, position);
  } catch (error: unknown) {
    recycleReadChunk(chunk);
    throw error;
  }
  return chunk;
}

/** For a blob whose content has not been hashed yet: how to report the outcome. */
export interface RangeVerification {
  readonly digest: Digest;
  readonly size: number;
  onVerified(): void;
  onMismatch(): void;
}

export interface RangeReadableOptions {
  readonly signal?: AbortSignal | undefined;
  readonly verify?: RangeVerification | undefined;
  /** Called once when the stream is finished or destroyed (unpins the blob). */
  readonly onClose?: () => void;
}

/**
 * Streams [start, end] of a complete blob, one chunk per _read, so it honours backpressure.
 *
 * With `verify`, the whole blob is hashed as it streams (bytes before `start` and after `end` are read and
 * hashed but not emitted), and the range's last byte is held back until the digest matched: a corrupt
 * file is never served completely. On mismatch the stream fails with ERR_STORE_DIGEST_MISMATCH.
 */
export class RangeReadable extends Readable {
  private position: number;
  private chunkBytes = FIRST_READ_CHUNK_BYTES;
  private readonly hash: Hash | undefined;
  private heldBack: Uint8Array | undefined;
  private busy = false;
  private readonly onAbort: (() => void) | undefined;

  constructor(
    private readonly source: RangeSource,
    private readonly range: ByteRange,
    private readonly options: RangeReadableOptions = {},
  ) {
    super({ highWaterMark: READ_CHUNK_BYTES });
    const verify = options.verify;
    this.hash = verify === undefined ? undefined : createHash(digestAlgorithm(verify.digest));
    this.position = verify === undefined ? range.start : 0;
    const signal = options.signal;
    if (signal !== undefined) {
      const onAbort = (): void => {
        this.destroy(abortedBySignal(signal));
      };
      this.onAbort = onAbort;
      if (signal.aborted) process.nextTick(onAbort);
      else signal.addEventListener("abort", onAbort, { once: true });
    }
  }

  override _read(): void {
    if (this.busy) return;
    this.busy = true;
    void this.next().then(
      (chunks) => {
        // Clear `busy` before pushing: push may synchronously lead to the next _read.
        this.busy = false;
        if (this.destroyed) return;
        for (const chunk of chunks) this.push(chunk);
      },
      (error: unknown) => {
        this.busy = false;
        this.destroy(toError(error));
      },
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (this.onAbort !== undefined) this.options.signal?.removeEventListener("abort", this.onAbort);
    this.options.onClose?.();
    this.source.close().then(
      () => {
        callback(error);
      },
      (closeError: unknown) => {
        callback(error ?? toError(closeError));
      },
    );
  }

  /** The next chunk to push (or the end, as null); at most one data chunk per call. */
  private async next(): Promise<(Uint8Array | null)[]> {
    const verify = this.options.verify;
    if (verify === undefined || this.hash === undefined) {
      if (this.position > this.range.end) return [null];
      const length = Math.min(this.chunkBytes, this.range.end + 1 - this.position);
      this.chunkBytes = READ_CHUNK_BYTES;
      const bytes = await readChunk(this.source, this.position, length);
      this.position += bytes.byteLength;
      return [bytes];
    }
    // Verifying: read on until there is something to emit or the whole blob is hashed.
    for (;;) {
      if (this.destroyed) return [];
      if (this.position >= verify.size) {
        const actual = `${digestAlgorithm(verify.digest)}:${this.hash.digest("hex")}`;
        if (actual !== verify.digest) {
          verify.onMismatch();
          throw new StoreError("ERR_STORE_DIGEST_MISMATCH", `stored content of ${verify.digest} hashes to ${actual}`);
        }
        verify.onVerified();
        return this.heldBack === undefined ? [null] : [this.heldBack, null];
      }
      const chunkStart = this.position;
      const bytes = await readChunk(this.source, chunkStart, Math.min(READ_CHUNK_BYTES, verify.size - chunkStart));
      this.hash.update(bytes);
      this.position += bytes.byteLength;
      const from = Math.max(chunkStart, this.range.start);
      const to = Math.min(this.position, this.range.end + 1);
      if (from >= to) continue;
      let emit = bytes.subarray(from - chunkStart, to - chunkStart);
      if (to === this.range.end + 1) {
        // Keep the range's last byte until the whole blob has matched its digest (a copy: the chunk it
        // came from may be given back for reuse once the rest is consumed).
        this.heldBack = Buffer.from(emit.subarray(emit.byteLength - 1));
        emit = emit.subarray(0, emit.byteLength - 1);
      }
      if (emit.byteLength > 0) return [emit];
    }
  }
}
