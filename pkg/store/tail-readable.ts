import { Readable } from "node:stream";
import { FIRST_READ_CHUNK_BYTES, READ_CHUNK_BYTES, recycleReadChunk, takeReadChunk } from "./read-chunks.js";
import { abortedBySignal, type ByteRange, toError } from "./store-helpers.js";

/**
 * How much a reader waiting at the write position may hold ahead of its consumer when copying announced bytes
 * (beyond its buffer's mark of READ_CHUNK_BYTES): a whole origin write batch (up to 5 MiB) fits.
 */
export const MAX_TEE_BUFFERED_BYTES = 8 * 1024 * 1024;

/** Bytes just written, at blob offset `position`: valid only during the progress call that passes them. */
export interface FreshBytes {
  readonly position: number;
  readonly bytes: Uint8Array;
}

/** What a tailing reader needs from a partial blob. */
export interface TailSource {
  readonly size: number;
  readonly state: "open" | "committed" | "aborted";
  /** The content matched its digest (committed, or being published): the final byte may go out. */
  readonly verified: boolean;
  /** The reason the partial was aborted. */
  abortError(): Error;
  /** End (exclusive, at most `limit`) of the bytes available from `position` on without waiting. */
  availableEnd(position: number, limit: number): number;
  /** Fills `target` with the bytes at `position`. */
  readInto(target: Uint8Array, position: number): Promise<void>;
  /**
   * Calls `listener` after any progress (bytes, pieces, commit, abort), with the bytes that progress wrote
   * when it has them in memory; returns the unsubscribe function.
   */
  onProgress(listener: (fresh?: FreshBytes) => void): () => void;
  acquireReader(): void;
  releaseReader(): void;
}

/**
 * Streams a range of a partial blob while it fills. It reads only when its consumer asks (_read), waits for
 * progress events when the next byte is not there yet, never emits the blob's final byte before the
 * partial is committed, and fails with the abort reason when the partial is aborted.
 *
 * A reader that is waiting at the position where new bytes land copies them from the writer's memory as
 * they are announced (a tee), instead of reading them back from storage: a cold pull-through is served
 * without a read per chunk. It takes a whole announcement even past its buffer's mark (up to
 * MAX_TEE_BUFFERED_BYTES). The same limits apply to both ways of getting bytes.
 */
export class TailReadable extends Readable {
  private position: number;
  private chunkBytes = FIRST_READ_CHUNK_BYTES;
  private readonly last: number;
  private busy = false;
  /** Set when the last _read found nothing to push: the next progress event resumes it. */
  private waiting = false;
  private readonly unsubscribe: () => void;
  private readonly onAbort: (() => void) | undefined;

  constructor(
    private readonly source: TailSource,
    range: ByteRange,
    private readonly signal?: AbortSignal,
  ) {
    super({ highWaterMark: READ_CHUNK_BYTES });
    this.position = range.start;
    this.last = range.end;
    source.acquireReader();
    // Subscribed for the stream's whole life, so even a reader nobody is reading from learns of an abort.
    this.unsubscribe = source.onProgress((fresh) => {
      if (source.state === "aborted") {
        this.destroy(source.abortError());
      } else if (this.waiting) {
        this.waiting = false;
        this.pump(fresh);
      }
    });
    if (source.state === "aborted") {
      process.nextTick(() => {
        this.destroy(source.abortError());
      });
    }
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
    this.pump();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.unsubscribe();
    if (this.onAbort !== undefined) this.signal?.removeEventListener("abort", this.onAbort);
    this.source.releaseReader();
    callback(error);
  }

  private pump(fresh?: FreshBytes): void {
    if (this.busy || this.destroyed || this.waiting) return;
    const source = this.source;
    if (source.state === "aborted") {
      this.destroy(source.abortError());
      return;
    }
    const committed = source.state === "committed" || source.verified;
    if (this.position > this.last) {
      // Ending tells the consumer the content is complete: for a range reaching the blob's end (and the
      // empty blob) that needs the verified digest.
      if (this.last === source.size - 1 && !committed) this.waiting = true;
      else this.push(null);
      return;
    }
    let limit = Math.min(this.last + 1, this.position + this.chunkBytes);
    if (!committed) limit = Math.min(limit, source.size - 1);
    const available = source.availableEnd(this.position, limit);
    if (available <= this.position) {
      this.waiting = true;
      return;
    }
    this.chunkBytes = READ_CHUNK_BYTES;
    if (fresh !== undefined && this.copyFresh(fresh, available)) return;
    this.busy = true;
    const chunk = takeReadChunk(available - this.position);
    void source.readInto(chunk, this.position).then(
      () => {
        this.busy = false;
        if (this.destroyed) return;
        this.position += chunk.byteLength;
        this.push(chunk);
      },
      (error: unknown) => {
        this.busy = false;
        recycleReadChunk(chunk);
        this.destroy(toError(error));
      },
    );
  }

  /**
   * Pushes [position, available) from `fresh` if it holds all of it, and goes on with the rest of `fresh` while
   * the consumer wants more. Returns false (nothing done) when `fresh` does not hold the next bytes.
   */
  private copyFresh(fresh: FreshBytes, available: number): boolean {
    const end = fresh.position + fresh.bytes.byteLength;
    if (this.position < fresh.position || available > end) return false;
    const chunk = takeReadChunk(available - this.position);
    chunk.set(fresh.bytes.subarray(this.position - fresh.position, available - fresh.position));
    this.position = available;
    // push() may call _read() at once, which pumps again (the next chunk, or waiting for more). Past the
    // buffer's mark the rest of `fresh` is still taken, up to MAX_TEE_BUFFERED_BYTES: the writer reuses its
    // memory when this call returns, so bytes left here would be read back from storage instead (on a cold
    // pull-through that was most of the blob: the client takes a chunk, then the reader stops at the mark).
    const wantsMore = this.push(chunk) || this.readableLength < MAX_TEE_BUFFERED_BYTES;
    if (wantsMore && !this.busy && !this.waiting && !this.destroyed && this.position < end) this.pump(fresh);
    return true;
  }
}
