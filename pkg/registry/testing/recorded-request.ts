import type { IncomingHttpHeaders } from "node:http";

/**
 * `storage` is `/_storage/<digest>`: the unauthenticated, "pre-signed" URL that blob redirects point
 * at, like the S3 or CDN origin behind a real registry.
 */
export type RequestKind = "base" | "manifest" | "blob" | "storage" | "token" | "other";

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly headers: IncomingHttpHeaders;
  readonly kind: RequestKind;
  /** Repository name of manifest and blob requests. */
  readonly name: string | undefined;
  /** Tag or digest of manifest requests, digest of blob and storage requests. */
  readonly reference: string | undefined;
  /** performance.now() on arrival: monotonic, comparable with the test's own performance.now(). */
  readonly receivedAtMs: number;
  /** Status sent, undefined while (or if forever) no headers went out. */
  readonly status: number | undefined;
  /** Response body bytes handed to the socket. */
  readonly bodyBytes: number;
}

/** Fields left out match anything. A function sees the request before anything is answered. */
export type RequestMatcher =
  | {
      readonly method?: string;
      readonly kind?: RequestKind;
      readonly name?: string;
      readonly reference?: string;
    }
  | ((request: RecordedRequest) => boolean);

export type MutableRecordedRequest = { -readonly [K in keyof RecordedRequest]: RecordedRequest[K] };

const V2_CONTENT_PATH = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/;
const STORAGE_PATH = /^\/_storage\/([^/]+)$/;

/** What a request is about, from its path alone. */
export function classify(pathname: string): Pick<RecordedRequest, "kind" | "name" | "reference"> {
  if (pathname === "/v2" || pathname === "/v2/") return { kind: "base", name: undefined, reference: undefined };
  if (pathname === "/token") return { kind: "token", name: undefined, reference: undefined };
  const storage = STORAGE_PATH.exec(pathname);
  if (storage) return { kind: "storage", name: undefined, reference: safeDecode(storage[1] ?? "") };
  const content = V2_CONTENT_PATH.exec(pathname);
  if (content) {
    return {
      kind: content[2] === "manifests" ? "manifest" : "blob",
      name: safeDecode(content[1] ?? ""),
      reference: safeDecode(content[3] ?? ""),
    };
  }
  return { kind: "other", name: undefined, reference: undefined };
}

function safeDecode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    // A fake answers malformed escapes with "unknown", like a registry would; keep the raw text.
    return segment;
  }
}

export function matches(matcher: RequestMatcher, request: RecordedRequest): boolean {
  if (typeof matcher === "function") return matcher(request);
  return (
    (matcher.method === undefined || matcher.method === request.method) &&
    (matcher.kind === undefined || matcher.kind === request.kind) &&
    (matcher.name === undefined || matcher.name === request.name) &&
    (matcher.reference === undefined || matcher.reference === request.reference)
  );
}
