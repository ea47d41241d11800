import { Backoff, type BackoffOptions } from "../util/index.js";

/** First wait after a failed list or watch; client-go's reflector starts at 800 ms as well. */
export const INITIAL_BACKOFF_MS = 800;
/** Cap on the wait, so a recovered API server is used again within this long. */
export const MAX_BACKOFF_MS = 30_000;
export const BACKOFF_MULTIPLIER = 2;

/** The backoff of API calls that failed (client-go's timings; spread ±20% so controllers do not return together). */
export function apiBackoff(options: BackoffOptions = {}): Backoff {
  return new Backoff({ initialDelayMs: INITIAL_BACKOFF_MS, maxDelayMs: MAX_BACKOFF_MS, multiplier: BACKOFF_MULTIPLIER, ...options });
}
