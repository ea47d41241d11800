export type PrefetchErrorCode =
  /** The tracker cancelled the assignment, its session ended, or the agent is stopping. */
  "ERR_PREFETCH_CANCELLED";

export class PrefetchError extends Error {
  override readonly name = "PrefetchError";
  constructor(
    readonly code: PrefetchErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isPrefetchError(error: unknown): error is PrefetchError {
  return error instanceof PrefetchError;
}
