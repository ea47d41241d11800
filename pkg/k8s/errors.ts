export type K8sErrorCode =
  /** The API answered with an error status (see `status`). */
  | "ERR_K8S_API"
  /** The API could not be reached (connection refused, reset, timed out). */
  | "ERR_K8S_UNREACHABLE"
  /** A kubeconfig or in-cluster configuration that cannot be used. */
  | "ERR_K8S_CONFIG"
  /** A label selector that does not parse. */
  | "ERR_K8S_SELECTOR"
  /** The object was stopped or closed. */
  | "ERR_K8S_CLOSED";

/** The fields of a Kubernetes `Status` error body that callers act on. */
export interface ApiStatus {
  /** HTTP status code: 404, 409, 410… */
  readonly code: number;
  /** NotFound, AlreadyExists, Conflict, Expired, Gone… ("" when the body had none). */
  readonly reason: string;
  readonly message: string;
}

export class K8sError extends Error {
  override readonly name = "K8sError";
  constructor(
    readonly code: K8sErrorCode,
    message: string,
    options?: { cause?: unknown; status?: ApiStatus },
  ) {
    super(message, options);
    this.status = options?.status;
  }

  readonly status: ApiStatus | undefined;
}

export function isK8sError(error: unknown, code?: K8sErrorCode): error is K8sError {
  return error instanceof K8sError && (code === undefined || error.code === code);
}

/**
 * The status of a failed client-node call: its ApiException carries the HTTP code and the response body
 * as text (the `Status` JSON), a failed watch an Error with `statusCode`. Undefined for transport errors.
 */
export function apiStatusOf(error: unknown): ApiStatus | undefined {
  if (error instanceof K8sError) return error.status;
  if (typeof error !== "object" || error === null) return undefined;
  const record = error as { code?: unknown; statusCode?: unknown; body?: unknown };
  const code = typeof record.code === "number" ? record.code : typeof record.statusCode === "number" ? record.statusCode : undefined;
  if (code === undefined || code < 100 || code > 599) return undefined;
  let reason = "";
  let message = error instanceof Error ? error.message : "";
  if (typeof record.body === "string" && record.body !== "") {
    try {
      const body = JSON.parse(record.body) as { reason?: unknown; message?: unknown };
      if (typeof body.reason === "string") reason = body.reason;
      if (typeof body.message === "string") message = body.message;
    } catch {
      // Not a Status body (a proxy's HTML page, say): keep the HTTP code and the exception's text.
    }
  }
  return { code, reason, message };
}

/** Wraps any failure of an API call as a K8sError naming what was attempted. */
export function toK8sError(error: unknown, what: string): K8sError {
  if (error instanceof K8sError) return error;
  const status = apiStatusOf(error);
  if (status !== undefined) {
    return new K8sError("ERR_K8S_API", `${what}: ${status.code}${status.reason === "" ? "" : ` ${status.reason}`}: ${status.message}`, {
      cause: error,
      status,
    });
  }
  const detail = error instanceof Error ? error.message : String(error);
  return new K8sError("ERR_K8S_UNREACHABLE", `${what}: ${detail}`, { cause: error });
}
