export type TrackerErrorCode =
  | "ERR_TRACKER_UNAVAILABLE"
  | "ERR_TRACKER_NOT_REGISTERED"
  | "ERR_TRACKER_PERMISSION_DENIED"
  | "ERR_TRACKER_INVALID_ARGUMENT"
  | "ERR_TRACKER_CLOSED"
  /** An agent over its budget (blobs announced, piece-hash bytes it brought in): its session is ended. */
  | "ERR_TRACKER_RESOURCE_EXHAUSTED";

export class TrackerError extends Error {
  override readonly name = "TrackerError";
  constructor(
    readonly code: TrackerErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isTrackerError(error: unknown, code?: TrackerErrorCode): error is TrackerError {
  return error instanceof TrackerError && (code === undefined || error.code === code);
}
