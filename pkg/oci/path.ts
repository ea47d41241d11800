import { type Digest, parseDigest } from "./digest.js";
import { OciError } from "./errors.js";
import { type Reference, parseReference, validateRepositoryName } from "./reference.js";
import { looksLikeRegistryHost, normalizeRepositoryName, parseRegistryHost } from "./registry-host.js";

/** `127.0.0.1_5000` → port written with `_`. */
const UNDERSCORE_PORT = /_(\d{1,5})$/;

/** Longest request path a mirror looks at; longer ones are rejected before any parsing. */
export const MAX_PATH_LENGTH = 2048;

export type MirrorRoute =
  | { readonly kind: "base" }
  | {
      readonly kind: "manifest";
      /** The registry named by `?ns=` or the first path segment; undefined means "the default upstream". */
      readonly registry: string | undefined;
      readonly name: string;
      readonly reference: Reference;
    }
  | { readonly kind: "blob"; readonly registry: string | undefined; readonly name: string; readonly digest: Digest };

/**
 * Parses a pull-API path of the OCI distribution spec, as a mirror receives it.
 *
 * The upstream registry is named, in this order of precedence, by containerd's `?ns=<registry>`
 * query parameter, or (for clients that send no `ns`, e.g. CRI-O/podman mirrors with a path prefix)
 * by a first path segment that looks like a registry host: `/v2/ghcr.io/org/app/manifests/v1`.
 * A port in that segment is written `host:port`, `host%3Aport`, or `host_port` — the last for clients
 * whose reference grammar forbids ':' in a path component (skopeo, podman): `_` never occurs in a host.
 */
export function parseMirrorPath(pathname: string, ns: string | null): MirrorRoute {
  if (pathname.length > MAX_PATH_LENGTH) throw new OciError("ERR_OCI_PATH_INVALID", "request path too long");
  if (pathname === "/v2" || pathname === "/v2/") return { kind: "base" };
  if (!pathname.startsWith("/v2/")) throw new OciError("ERR_OCI_PATH_INVALID", "not an OCI distribution path");
  const segments = pathname.slice("/v2/".length).split("/").map(decodeSegment);
  if (segments.length < 3) throw new OciError("ERR_OCI_PATH_INVALID", "not an OCI distribution path");
  const reference = segments[segments.length - 1] ?? "";
  const kind = segments[segments.length - 2];
  let nameSegments = segments.slice(0, -2);

  let registry: string | undefined;
  if (ns !== null) {
    registry = parseRegistryHost(ns);
  } else if (nameSegments.length > 1) {
    const first = (nameSegments[0] ?? "").replace(UNDERSCORE_PORT, ":$1");
    if (looksLikeRegistryHost(first)) {
      registry = parseRegistryHost(first);
      nameSegments = nameSegments.slice(1);
    }
  }
  const rawName = nameSegments.join("/");
  const name = validateRepositoryName(registry === undefined ? rawName : normalizeRepositoryName(registry, rawName));

  if (kind === "manifests") return { kind: "manifest", registry, name, reference: parseReference(reference) };
  if (kind === "blobs") {
    if (reference === "uploads") throw new OciError("ERR_OCI_PATH_INVALID", "this mirror is pull-only");
    return { kind: "blob", registry, name, digest: parseDigest(reference) };
  }
  throw new OciError("ERR_OCI_PATH_INVALID", "only manifests and blobs can be pulled through this mirror");
}

function decodeSegment(segment: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(segment);
  } catch (cause) {
    throw new OciError("ERR_OCI_PATH_INVALID", "malformed percent-encoding in path", { cause });
  }
  // An encoded '/' or a dot segment would let a name escape its components.
  if (decoded.length === 0 || decoded.includes("/") || decoded === "." || decoded === ".." || decoded.includes("\0")) {
    throw new OciError("ERR_OCI_PATH_INVALID", "invalid path segment");
  }
  return decoded;
}
