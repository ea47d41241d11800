export type HarnessErrorCode =
  /** A daemon did not become ready in time, or exited while starting. */
  | "ERR_HARNESS_START"
  /** A client command (skopeo, ctr) exited non-zero, was killed by its timeout, or could not run. */
  | "ERR_HARNESS_COMMAND"
  /** A daemon did not exit after SIGKILL, or its files could not be removed. */
  | "ERR_HARNESS_STOP"
  | "ERR_HARNESS_TIMEOUT"
  | "ERR_HARNESS_INVALID_ARGUMENT";

/** Errors of the e2e harnesses; messages end with the tail of the relevant daemon or command log. */
export class HarnessError extends Error {
  override readonly name = "HarnessError";
  constructor(
    readonly code: HarnessErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
