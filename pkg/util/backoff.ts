/** Defaults: grpc-js' reconnect backoff (backoff-timeout.ts). Users pass their own where theirs differ. */
export const DEFAULT_INITIAL_BACKOFF_MS = 1000;
export const DEFAULT_MAX_BACKOFF_MS = 10_000;
export const DEFAULT_BACKOFF_MULTIPLIER = 1.6;
/** Each wait is spread by ±20%, so clients that failed together do not come back together. */
export const DEFAULT_BACKOFF_JITTER = 0.2;

export interface BackoffOptions {
  readonly initialDelayMs?: number;
  readonly maxDelayMs?: number;
  readonly multiplier?: number;
  /** Fraction by which each wait is spread either way. */
  readonly jitter?: number;
  /** Uniform in [0, 1); Math.random by default (tests pass a fixed one). */
  readonly random?: () => number;
}

/** Capped exponential backoff with jitter: `next()` is the wait before the next attempt. */
export class Backoff {
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly multiplier: number;
  private readonly jitter: number;
  private readonly random: () => number;
  private delayMs: number;

  constructor(options: BackoffOptions = {}) {
    this.initialDelayMs = options.initialDelayMs ?? DEFAULT_INITIAL_BACKOFF_MS;
    this.maxDelayMs = Math.max(options.maxDelayMs ?? DEFAULT_MAX_BACKOFF_MS, this.initialDelayMs);
    this.multiplier = options.multiplier ?? DEFAULT_BACKOFF_MULTIPLIER;
    this.jitter = options.jitter ?? DEFAULT_BACKOFF_JITTER;
    this.random = options.random ?? Math.random;
    this.delayMs = this.initialDelayMs;
  }

  next(): number {
    const base = this.delayMs;
    this.delayMs = Math.min(base * this.multiplier, this.maxDelayMs);
    return Math.max(0, Math.round(base * (1 + this.jitter * (this.random() * 2 - 1))));
  }

  /** After a success: the next failure starts again from the initial delay. */
  reset(): void {
    this.delayMs = this.initialDelayMs;
  }
}
