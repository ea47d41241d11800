import { Readable } from "node:stream";
import { FIRST_READ_CHUNK_BYTES, READ_CHUNK_BYTES, recycleReadChunk, takeReadChunk } from "./read-chunks.js";
import { abortedBySignal, type ByteRange, toError } from "./store-helpers.js";

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
  /** Calls `listener` after any progress (bytes, pieces, commit, abort); returns the unsubscribe function. */
  onProgress(listener: () => void): () => void;
  acquireReader(): void;
  releaseReader(): void;
}

/**
 * Streams a range of a partial blob while it fills. It reads only when its consumer asks (_read), waits for
 * progress events when the next byte is not there yet, never emits the blob's final byte before the
 * partial is committed, and fails with the abort reason when the partial is aborted.
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
    this.unsubscribe = source.onProgress(() => {
      if (source.state === "aborted") {
        this.destroy(source.abortError());
      } else if (this.waiting) {
        this.waiting = false;
        this.pump();
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

  private pump(): void {
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
    this.busy = true;
    this.chunkBytes = READ_CHUNK_BYTES;
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
}
