/** ERR_SIM_INVALID_CONFIG: a setting out of range; ERR_SIM_INTERNAL: the simulation broke its own invariant. */
export type SimErrorCode = "ERR_SIM_INVALID_CONFIG" | "ERR_SIM_INTERNAL";

/** A simulation that cannot run as configured; the message names the setting. */
export class SimError extends Error {
  override readonly name = "SimError";
  constructor(
    readonly code: SimErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isSimError(error: unknown, code?: SimErrorCode): error is SimError {
  return error instanceof SimError && (code === undefined || error.code === code);
}
