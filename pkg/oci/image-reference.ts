import { type Digest, parseDigest } from "./digest.js";
import { validateRepositoryName, validateTag } from "./reference.js";
import { DOCKER_HUB, looksLikeRegistryHost, normalizeRepositoryName, parseRegistryHost } from "./registry-host.js";

export const DEFAULT_TAG = "latest";

/** An image reference as users write it: `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`. */
export interface ImageReference {
  readonly registry: string;
  readonly repository: string;
  readonly tag: string | undefined;
  readonly digest: Digest | undefined;
}

/**
 * Parses a reference with Docker's rules: the first component is a registry when it contains `.` or
 * `:` or is `localhost`, otherwise the registry is Docker Hub (and one-component names get `library/`);
 * no tag and no digest means `latest`. Throws an Error saying what is wrong.
 */
export function parseImageReference(raw: string): ImageReference {
  let rest = raw.trim();
  if (rest === "") throw new Error("expected a reference such as registry.example/team/app:v1");
  let digest: Digest | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = parseDigest(rest.slice(at + 1));
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = validateTag(rest.slice(colon + 1));
    rest = rest.slice(0, colon);
  }
  const slash = rest.indexOf("/");
  const first = slash < 0 ? "" : rest.slice(0, slash);
  const hasRegistry = slash >= 0 && looksLikeRegistryHost(first);
  const registry = hasRegistry ? parseRegistryHost(first) : DOCKER_HUB;
  const repository = validateRepositoryName(normalizeRepositoryName(registry, hasRegistry ? rest.slice(slash + 1) : rest));
  return { registry, repository, tag: tag ?? (digest === undefined ? DEFAULT_TAG : undefined), digest };
}

export function formatImageReference(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag === undefined ? "" : `:${ref.tag}`}${ref.digest === undefined ? "" : `@${ref.digest}`}`;
}
