/** Above this many queued bytes, the producer waits for the write in flight (backpressure). */
export const DEFAULT_MAX_QUEUED_BYTES = 2 * 1024 * 1024;

/**
 * Turns a stream of small chunks into few large writes: while one write is in flight, newer chunks
 * queue and go out together in the next one. Adds no latency (a lone chunk is written at once) and
 * bounds memory: push() waits once more than `maxQueuedBytes` are queued.
 */
export class CoalescingWriter {
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private inflight: Promise<void> | undefined;
  private failure: Error | undefined;

  constructor(
    private readonly write: (data: Buffer) => Promise<void>,
    private readonly maxQueuedBytes = DEFAULT_MAX_QUEUED_BYTES,
  ) {}

  async push(chunk: Buffer): Promise<void> {
    if (this.failure !== undefined) throw this.failure;
    this.queue.push(chunk);
    this.queuedBytes += chunk.length;
    this.inflight ??= this.drain();
    if (this.queuedBytes > this.maxQueuedBytes) await this.flush();
  }

  /** Resolves when everything pushed has been written; rejects with the first write error. */
  async flush(): Promise<void> {
    if (this.inflight) await this.inflight;
    if (this.failure !== undefined) throw this.failure;
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.length === 1 ? (this.queue[0] as Buffer) : Buffer.concat(this.queue, this.queuedBytes);
        this.queue = [];
        this.queuedBytes = 0;
        await this.write(batch);
      }
    } catch (error) {
      this.failure = error instanceof Error ? error : new Error(String(error));
      this.queue = [];
      this.queuedBytes = 0;
    } finally {
      this.inflight = undefined;
    }
  }
}
