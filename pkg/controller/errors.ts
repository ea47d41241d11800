export type ControllerErrorCode =
  /** Options that cannot work together (timings, selector, namespace). */
  | "ERR_CONTROLLER_CONFIG"
  /** Stopped before it could finish what was asked. */
  | "ERR_CONTROLLER_STOPPED";

export class ControllerError extends Error {
  override readonly name = "ControllerError";
  constructor(
    readonly code: ControllerErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
