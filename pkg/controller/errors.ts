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

/**
 * Why an ImagePrefetch cannot be done (now): the `reason` of its Failed condition and Events,
 * UpperCamelCase as Kubernetes reasons are.
 */
export type PrefetchFailureReason =
  | "InvalidSpec"
  | "RegistryNotMirrored"
  | "ReferenceNotFound"
  | "AuthFailed"
  | "RegistryUnavailable"
  | "ManifestInvalid"
  | "PlatformNotFound"
  | "ManifestsTooLarge"
  | "PullSecretNotFound"
  | "PullSecretForbidden"
  | "PullSecretInvalid"
  | "SeedFailed";

export class PrefetchFailure extends Error {
  override readonly name = "PrefetchFailure";
  readonly code = "ERR_PREFETCH_FAILED";
  constructor(
    readonly reason: PrefetchFailureReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
