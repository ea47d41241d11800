/** First wait after a failed list or watch; client-go's reflector starts at 800 ms as well. */
export const INITIAL_BACKOFF_MS = 800;
/** Cap on the wait, so a recovered API server is used again within this long. */
export const MAX_BACKOFF_MS = 30_000;
export const BACKOFF_MULTIPLIER = 2;
/** Each wait is spread by ±20% so many controllers do not hit a recovering API server together. */
export const BACKOFF_JITTER = 0.2;

export interface BackoffOptions {
  readonly initialDelayMs?: number;
  readonly maxDelayMs?: number;
  readonly random?: () => number;
}

/** Capped exponential backoff with jitter: `next()` is the wait before the next attempt. */
export class Backoff {
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly random: () => number;
  private delayMs: number;

  constructor(options: BackoffOptions = {}) {
    this.initialDelayMs = options.initialDelayMs ?? INITIAL_BACKOFF_MS;
    this.maxDelayMs = Math.max(options.maxDelayMs ?? MAX_BACKOFF_MS, this.initialDelayMs);
    this.random = options.random ?? Math.random;
    this.delayMs = this.initialDelayMs;
  }

  next(): number {
    const base = this.delayMs;
    this.delayMs = Math.min(base * BACKOFF_MULTIPLIER, this.maxDelayMs);
    return Math.max(0, Math.round(base * (1 + BACKOFF_JITTER * (this.random() * 2 - 1))));
  }

  reset(): void {
    this.delayMs = this.initialDelayMs;
  }
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal.aborted) {
      reject(signalReason(signal));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signalReason(signal));
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

export function signalReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new DOMException("The operation was aborted", "AbortError");
}
