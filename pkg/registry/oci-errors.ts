import type { ServerResponse } from "node:http";
import { OciError } from "../oci/index.js";
import { isStoreError } from "../store/index.js";
import { RegistryError } from "./errors.js";

/** An error as the OCI distribution spec puts it on the wire. */
export interface OciErrorResponse {
  readonly status: number;
  readonly code: string;
  readonly message: string;
  /** True when the answer exists to make containerd try the next host (the upstream) itself. */
  readonly fallback?: boolean;
}

/**
 * The one place where errors become HTTP. Failures that leave the runtime better off pulling directly
 * (unknown registry, missing credentials, no source within the start deadline) are 404s, which
 * containerd answers by falling back to the next host; other upstream failures are 502 with a reason.
 */
export function toOciErrorResponse(error: unknown, kind: "manifest" | "blob" | "base"): OciErrorResponse {
  const unknownCode = kind === "manifest" ? "MANIFEST_UNKNOWN" : "BLOB_UNKNOWN";
  if (error instanceof OciError) {
    switch (error.code) {
      case "ERR_OCI_DIGEST_INVALID":
      case "ERR_OCI_DIGEST_UNSUPPORTED":
        return { status: 400, code: "DIGEST_INVALID", message: error.message };
      case "ERR_OCI_NAME_INVALID":
      case "ERR_OCI_REGISTRY_INVALID":
        return { status: 400, code: "NAME_INVALID", message: error.message };
      case "ERR_OCI_TAG_INVALID":
        return { status: 400, code: "TAG_INVALID", message: error.message };
      case "ERR_OCI_RANGE_INVALID":
        return { status: 416, code: "RANGE_INVALID", message: error.message };
      case "ERR_OCI_PATH_INVALID":
        return { status: 404, code: "UNSUPPORTED", message: error.message };
    }
  }
  if (error instanceof RegistryError) {
    switch (error.code) {
      case "ERR_REGISTRY_UNKNOWN":
      case "ERR_REGISTRY_UNNAMED":
        return { status: 404, code: "NAME_UNKNOWN", message: error.message, fallback: true };
      case "ERR_UPSTREAM_NOT_FOUND":
        return { status: 404, code: unknownCode, message: error.message };
      case "ERR_UPSTREAM_AUTH":
        return { status: 404, code: "UNAUTHORIZED", message: error.message, fallback: true };
      case "ERR_START_TIMEOUT":
        return { status: 404, code: unknownCode, message: error.message, fallback: true };
      case "ERR_UPSTREAM_TOO_MANY_REQUESTS":
        return { status: 429, code: "TOOMANYREQUESTS", message: error.message };
      case "ERR_DIGEST_MISMATCH":
        return { status: 502, code: "DIGEST_INVALID", message: error.message };
      default:
        return { status: 502, code: "UNAVAILABLE", message: error.message };
    }
  }
  if (isStoreError(error, "ERR_STORE_QUOTA_EXCEEDED")) {
    return { status: 503, code: "UNAVAILABLE", message: "the node's blob store is full", fallback: true };
  }
  if (isStoreError(error, "ERR_STORE_ABORTED")) {
    return { status: 502, code: "UNAVAILABLE", message: "the transfer of this blob failed before it could start", fallback: true };
  }
  if (isStoreError(error, "ERR_STORE_DIGEST_MISMATCH")) {
    return { status: 502, code: "DIGEST_INVALID", message: "content did not match its digest and was discarded" };
  }
  return { status: 500, code: "UNKNOWN", message: "internal error" };
}

export function writeOciError(res: ServerResponse, response: OciErrorResponse, headers: Record<string, string> = {}): void {
  const body = JSON.stringify({ errors: [{ code: response.code, message: response.message }] });
  res.writeHead(response.status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
    "docker-distribution-api-version": "registry/2.0",
    ...headers,
  });
  res.end(res.req.method === "HEAD" ? undefined : body);
}

/** A complete raw HTTP response for errors found before Node parsed a request (e.g. oversized headers). */
export function rawOciError(status: number, reason: string, code: string, message: string): string {
  const body = JSON.stringify({ errors: [{ code, message }] });
  return `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}
