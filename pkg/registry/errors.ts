export type RegistryErrorCode =
  /** The request names a registry this agent does not mirror. */
  | "ERR_REGISTRY_UNKNOWN"
  /** No registry named and no default configured. */
  | "ERR_REGISTRY_UNNAMED"
  | "ERR_UPSTREAM_NOT_FOUND"
  | "ERR_UPSTREAM_AUTH"
  | "ERR_UPSTREAM_STATUS"
  | "ERR_UPSTREAM_TOO_MANY_REQUESTS"
  | "ERR_UPSTREAM_NETWORK"
  | "ERR_UPSTREAM_TIMEOUT"
  | "ERR_UPSTREAM_TRUNCATED"
  | "ERR_UPSTREAM_PROTOCOL"
  | "ERR_UPSTREAM_TOO_LARGE"
  | "ERR_DIGEST_MISMATCH"
  /** No source could start answering within the response start deadline. */
  | "ERR_START_TIMEOUT"
  /** A response that had started stopped receiving bytes from any source (it is cut, never completed wrong). */
  | "ERR_STREAM_STALLED";

export class RegistryError extends Error {
  override readonly name = "RegistryError";
  constructor(
    readonly code: RegistryErrorCode,
    message: string,
    options?: { cause?: unknown; status?: number },
  ) {
    super(message, options);
    this.status = options?.status;
  }
  /** The upstream's HTTP status, when there was one. */
  readonly status: number | undefined;
}

export function isRegistryError(error: unknown, code?: RegistryErrorCode): error is RegistryError {
  return error instanceof RegistryError && (code === undefined || error.code === code);
}

/** Failures worth retrying against the same upstream (resume with Range) or hiding behind a cached tag. */
export function isTransientUpstreamError(error: unknown): boolean {
  return (
    isRegistryError(error) &&
    [
      "ERR_UPSTREAM_NETWORK",
      "ERR_UPSTREAM_TIMEOUT",
      "ERR_UPSTREAM_TRUNCATED",
      "ERR_UPSTREAM_STATUS",
      "ERR_UPSTREAM_TOO_MANY_REQUESTS",
    ].includes(error.code)
  );
}
