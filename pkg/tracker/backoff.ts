/** First wait before reconnecting, as in grpc-js' backoff-timeout.ts. */
export const INITIAL_BACKOFF_MS = 1000;
/** Cap on the wait: after a long outage every agent is back within this long of the tracker returning. */
export const MAX_BACKOFF_MS = 10_000;
export const BACKOFF_MULTIPLIER = 1.6;
/** Each wait is spread by ±20% so agents that lost the tracker together do not return together. */
export const BACKOFF_JITTER = 0.2;

export interface BackoffOptions {
  readonly initialDelayMs?: number;
  readonly maxDelayMs?: number;
  readonly multiplier?: number;
  readonly jitter?: number;
  readonly random?: () => number;
}

/** Capped exponential backoff with jitter; `next()` gives the wait before the next attempt. */
export class Backoff {
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly multiplier: number;
  private readonly jitter: number;
  private readonly random: () => number;
  private delayMs: number;

  constructor(options: BackoffOptions = {}) {
    this.initialDelayMs = options.initialDelayMs ?? INITIAL_BACKOFF_MS;
    this.maxDelayMs = Math.max(options.maxDelayMs ?? MAX_BACKOFF_MS, this.initialDelayMs);
    this.multiplier = options.multiplier ?? BACKOFF_MULTIPLIER;
    this.jitter = options.jitter ?? BACKOFF_JITTER;
    this.random = options.random ?? Math.random;
    this.delayMs = this.initialDelayMs;
  }

  next(): number {
    const base = this.delayMs;
    this.delayMs = Math.min(base * this.multiplier, this.maxDelayMs);
    return Math.max(0, Math.round(base * (1 + this.jitter * (this.random() * 2 - 1))));
  }

  /** After a successful session: the next loss starts again from the initial delay. */
  reset(): void {
    this.delayMs = this.initialDelayMs;
  }
}
