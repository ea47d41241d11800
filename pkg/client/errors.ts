export type PullErrorCode =
  "ERR_PULL_STATUS" | "ERR_PULL_DIGEST_MISMATCH" | "ERR_PULL_INVALID_MANIFEST" | "ERR_PULL_NO_PLATFORM" | "ERR_PULL_TOO_LARGE";

export class PullError extends Error {
  override readonly name = "PullError";
  constructor(
    readonly code: PullErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
