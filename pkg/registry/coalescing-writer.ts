/**
 * Above this many queued bytes, the producer waits for the write in flight to end (backpressure). So at most
 * about twice this is held: the queue, and the batch being written.
 */
export const DEFAULT_MAX_QUEUED_BYTES = 4 * 1024 * 1024;
/** The queue passes its limit by one chunk at most; a batch up to this much larger still fits the buffer. */
const BATCH_SLACK_BYTES = 1024 * 1024;
/** With a linger (CoalescingWriterOptions.lingerMs), a batch this large goes out without waiting for it. */
export const DEFAULT_MIN_BATCH_BYTES = 1024 * 1024;

export interface CoalescingWriterOptions {
  /** Queued bytes above which push() waits (default DEFAULT_MAX_QUEUED_BYTES). */
  readonly maxQueuedBytes?: number | undefined;
  /**
   * How long chunks that arrive while no write is in flight may wait for more, when they are fewer than
   * `minBatchBytes` (default 0: written at once). Every write costs the same whatever its size (a syscall,
   * the hash worker's round trip, the readers' wake-up), and a slow source sends small chunks far apart.
   */
  readonly lingerMs?: number | undefined;
  /** See lingerMs (default DEFAULT_MIN_BATCH_BYTES). */
  readonly minBatchBytes?: number | undefined;
}

/**
 * Turns a stream of small chunks into few large writes: while one write is in flight, newer chunks
 * queue and go out together in the next one. Without a linger it adds no latency (a lone chunk is written
 * at once); with one, fewer than `minBatchBytes` wait up to `lingerMs` for more (flush() does not wait).
 * It bounds memory: push() waits once more than `maxQueuedBytes` are queued.
 *
 * Batches are gathered into one buffer that is reused for every batch (allocating a fresh one per write
 * made gigabytes of short-lived off-heap memory and the garbage collections that go with it), so `write`
 * must be done with `data` when its promise settles. The buffer is a SharedArrayBuffer's, which a store
 * hashing in a worker thread reads where it is.
 */
export class CoalescingWriter {
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private inflight: Promise<void> | undefined;
  private failure: Error | undefined;
  private batchBuffer: Buffer | undefined;
  /** Resolved when the queue is taken as a batch (or the writer failed): a producer over the limit waits for it. */
  private queueTaken: PromiseWithResolvers<undefined> | undefined;
  private lingerTimer: NodeJS.Timeout | undefined;
  /** flush() was called: nothing lingers any more. */
  private flushing = false;
  /** discard() was called: nothing is written any more. */
  private discarded = false;
  private readonly maxQueuedBytes: number;
  private readonly lingerMs: number;
  private readonly minBatchBytes: number;

  constructor(
    private readonly write: (data: Buffer) => Promise<void>,
    options: CoalescingWriterOptions = {},
  ) {
    this.maxQueuedBytes = options.maxQueuedBytes ?? DEFAULT_MAX_QUEUED_BYTES;
    this.lingerMs = options.lingerMs ?? 0;
    this.minBatchBytes = options.minBatchBytes ?? DEFAULT_MIN_BATCH_BYTES;
  }

  async push(chunk: Buffer): Promise<void> {
    this.throwIfFailed();
    this.queue.push(chunk);
    this.queuedBytes += chunk.length;
    this.schedule();
    if (this.queuedBytes > this.maxQueuedBytes) {
      // Only until the write in flight ends and the queue becomes the next batch: the producer then reads
      // on while that batch is written, instead of waiting for the writer to run dry (which left the
      // source unread for a whole write and restarted each cycle with a lone small write).
      this.queueTaken ??= Promise.withResolvers<undefined>();
      await this.queueTaken.promise;
      this.throwIfFailed();
    }
  }

  /** Writes what is queued at once; resolves when everything pushed has been written, rejects with the first write error. */
  async flush(): Promise<void> {
    this.flushing = true;
    this.schedule();
    while (this.inflight !== undefined) await this.inflight;
    if (this.failure !== undefined) throw this.failure;
  }

  /**
   * Drops what is queued and writes nothing more (a write in flight ends on its own): for a producer that
   * gave up on its source and will start again from what was written.
   */
  discard(): void {
    this.discarded = true;
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    this.queue = [];
    this.queuedBytes = 0;
    this.releaseProducer();
  }

  /** Starts a write of the queue now, or arms the linger for a queue that may wait. */
  private schedule(): void {
    if (this.inflight !== undefined || this.queue.length === 0 || this.discarded || this.failure !== undefined) return;
    if (this.worthWriting()) {
      this.startWriting();
      return;
    }
    // Armed only while nothing is in flight and the queue is not empty; startWriting and discard clear it.
    this.lingerTimer ??= setTimeout(() => {
      this.startWriting();
    }, this.lingerMs);
  }

  /** The queue goes out without lingering: no linger, a batch large enough, or a flush. */
  private worthWriting(): boolean {
    return this.flushing || this.lingerMs <= 0 || this.queuedBytes >= this.minBatchBytes;
  }

  private startWriting(): void {
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    this.inflight = this.drain();
  }

  private async drain(): Promise<void> {
    try {
      do {
        const batch = this.gather();
        this.queue = [];
        this.queuedBytes = 0;
        this.releaseProducer();
        await this.write(batch);
        // What arrived meanwhile goes out now if it is a batch worth writing; less waits for the linger.
      } while (this.queue.length > 0 && !this.discarded && this.worthWriting());
    } catch (error) {
      this.failure = error instanceof Error ? error : new Error(String(error));
      this.queue = [];
      this.queuedBytes = 0;
      this.batchBuffer = undefined;
      this.releaseProducer();
    } finally {
      this.inflight = undefined;
      this.schedule();
    }
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private releaseProducer(): void {
    const taken = this.queueTaken;
    this.queueTaken = undefined;
    taken?.resolve(undefined);
  }

  /** The queued chunks as one buffer: the lone chunk itself, or a copy into the reused batch buffer. */
  private gather(): Buffer {
    if (this.queue.length === 1) return this.queue[0] as Buffer;
    const capacity = this.maxQueuedBytes + BATCH_SLACK_BYTES;
    if (this.queuedBytes > capacity) return Buffer.concat(this.queue, this.queuedBytes);
    // Shared memory: the store's hash worker reads it without a copy.
    this.batchBuffer ??= Buffer.from(new SharedArrayBuffer(capacity));
    let offset = 0;
    for (const chunk of this.queue) offset += chunk.copy(this.batchBuffer, offset);
    return this.batchBuffer.subarray(0, offset);
  }
}
