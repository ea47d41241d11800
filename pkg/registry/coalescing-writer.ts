/**
 * Above this many queued bytes, the producer waits for the write in flight to end (backpressure). So at most
 * about twice this is held: the queue, and the batch being written.
 */
export const DEFAULT_MAX_QUEUED_BYTES = 4 * 1024 * 1024;
/** The queue passes its limit by one chunk at most; a batch up to this much larger still fits the buffer. */
const BATCH_SLACK_BYTES = 1024 * 1024;

/**
 * Turns a stream of small chunks into few large writes: while one write is in flight, newer chunks
 * queue and go out together in the next one. Adds no latency (a lone chunk is written at once) and
 * bounds memory: push() waits once more than `maxQueuedBytes` are queued.
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

  constructor(
    private readonly write: (data: Buffer) => Promise<void>,
    private readonly maxQueuedBytes = DEFAULT_MAX_QUEUED_BYTES,
  ) {}

  async push(chunk: Buffer): Promise<void> {
    this.throwIfFailed();
    this.queue.push(chunk);
    this.queuedBytes += chunk.length;
    this.inflight ??= this.drain();
    if (this.queuedBytes > this.maxQueuedBytes) {
      // Only until the write in flight ends and the queue becomes the next batch: the producer then reads
      // on while that batch is written, instead of waiting for the writer to run dry (which left the
      // source unread for a whole write and restarted each cycle with a lone small write).
      this.queueTaken ??= Promise.withResolvers<undefined>();
      await this.queueTaken.promise;
      this.throwIfFailed();
    }
  }

  /** Resolves when everything pushed has been written; rejects with the first write error. */
  async flush(): Promise<void> {
    if (this.inflight) await this.inflight;
    if (this.failure !== undefined) throw this.failure;
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.gather();
        this.queue = [];
        this.queuedBytes = 0;
        this.releaseProducer();
        await this.write(batch);
      }
    } catch (error) {
      this.failure = error instanceof Error ? error : new Error(String(error));
      this.queue = [];
      this.queuedBytes = 0;
      this.batchBuffer = undefined;
      this.releaseProducer();
    } finally {
      this.inflight = undefined;
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
