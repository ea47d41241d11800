import { setTimeout as sleep } from "node:timers/promises";

/** How much a bucket may hold beyond one second's worth: bursts stay short, as with `tc tbf`. */
const DEFAULT_BURST_SECONDS = 0.05;
/** The smallest burst, so one 64 KiB chunk always fits. */
const MIN_BURST_BYTES = 128 * 1024;

/**
 * A token bucket shared by every stream it throttles: the sum of their rates stays at `bytesPerSecond`.
 * Waiters are served in arrival order, so one stream cannot starve the others.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;
  private readonly burst: number;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    readonly bytesPerSecond: number,
    options: { burstBytes?: number; now?: () => number } = {},
  ) {
    if (!(bytesPerSecond > 0)) throw new RangeError("bytesPerSecond must be positive");
    this.now = options.now ?? (() => performance.now());
    this.burst = options.burstBytes ?? Math.max(MIN_BURST_BYTES, bytesPerSecond * DEFAULT_BURST_SECONDS);
    this.tokens = this.burst;
    this.last = this.now();
  }

  private readonly now: () => number;

  /** Resolves when `bytes` may be sent. Large requests are paid in burst-sized instalments. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    const turn = this.queue.then(() => this.pay(bytes, signal));
    // The next waiter queues behind this one whether it succeeds or is aborted.
    this.queue = turn.catch(() => undefined);
    await turn;
  }

  /**
   * Pays for `bytes` at once, ahead of the waiters: the balance may go below zero, and the waiters then
   * sleep the debt off, so the rate holds. For a few small sends (an image config) that would otherwise
   * wait behind megabytes of queued layer pieces; the caller bounds how much may take this way.
   */
  takeAhead(bytes: number): void {
    this.refill();
    this.tokens -= bytes;
  }

  private async pay(bytes: number, signal?: AbortSignal): Promise<void> {
    let owed = bytes;
    while (owed > 0) {
      this.refill();
      const part = Math.min(owed, this.burst);
      if (this.tokens >= part) {
        this.tokens -= part;
        owed -= part;
        continue;
      }
      const waitMs = ((part - this.tokens) / this.bytesPerSecond) * 1000;
      await sleep(Math.max(1, Math.ceil(waitMs)), undefined, signal ? { signal } : undefined);
    }
  }

  private refill(): void {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.bytesPerSecond);
    this.last = now;
  }
}
