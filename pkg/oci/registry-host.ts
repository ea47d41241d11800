import { OciError } from "./errors.js";

// A registry as written in image references: a DNS name or IPv4 address, or a bracketed IPv6
// address, optionally with a port. Nothing else: no scheme, no credentials, no path.
const HOST_GRAMMAR =
  /^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$/;
const MAX_HOST_LENGTH = 253 + 6;

export const DOCKER_HUB = "docker.io";

/** Validates a registry host such as `ghcr.io`, `127.0.0.1:5000` or `[::1]:5000`, lower-cased. */
export function parseRegistryHost(value: string): string {
  if (value.length === 0 || value.length > MAX_HOST_LENGTH || !HOST_GRAMMAR.test(value)) {
    throw new OciError(
      "ERR_OCI_REGISTRY_INVALID",
      `invalid registry ${JSON.stringify(value.slice(0, 80))}: expected HOST or HOST:PORT, without scheme, credentials or path`,
    );
  }
  const port = /:(\d+)$/.exec(value)?.[1];
  if (port !== undefined && !value.endsWith("]") && (Number(port) < 1 || Number(port) > 65535)) {
    throw new OciError("ERR_OCI_REGISTRY_INVALID", `invalid registry ${JSON.stringify(value)}: port out of range`);
  }
  const host = value.toLowerCase();
  // Docker's own aliases for Docker Hub.
  if (host === "index.docker.io" || host === "registry-1.docker.io") return DOCKER_HUB;
  return host;
}

/**
 * Whether the first path segment names a registry rather than a repository component.
 * Same rule as Docker's reference normalisation: it contains a '.' or ':' or is `localhost`.
 */
export function looksLikeRegistryHost(segment: string): boolean {
  return segment.includes(".") || segment.includes(":") || segment === "localhost" || segment.startsWith("[");
}

/** Docker Hub names without a namespace live under `library/`. */
export function normalizeRepositoryName(registry: string, name: string): string {
  return registry === DOCKER_HUB && !name.includes("/") ? `library/${name}` : name;
}
