import { type Digest, parseDigest } from "./digest.js";
import { OciError } from "./errors.js";

// OCI distribution spec: <name> components and the tag grammar.
const NAME_GRAMMAR = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG_GRAMMAR = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** distribution's limit on a repository name. */
export const MAX_NAME_LENGTH = 255;

export function validateRepositoryName(name: string): string {
  if (name.length === 0 || name.length > MAX_NAME_LENGTH || !NAME_GRAMMAR.test(name)) {
    throw new OciError("ERR_OCI_NAME_INVALID", `invalid repository name ${JSON.stringify(name.slice(0, 80))}`);
  }
  return name;
}

export function validateTag(tag: string): string {
  if (!TAG_GRAMMAR.test(tag)) {
    throw new OciError("ERR_OCI_TAG_INVALID", `invalid tag ${JSON.stringify(tag.slice(0, 80))}`);
  }
  return tag;
}

export type Reference = { readonly kind: "tag"; readonly tag: string } | { readonly kind: "digest"; readonly digest: Digest };

/** A manifest reference is a digest when it contains ':' (tags cannot), otherwise a tag. */
export function parseReference(reference: string): Reference {
  if (reference.includes(":")) return { kind: "digest", digest: parseDigest(reference) };
  return { kind: "tag", tag: validateTag(reference) };
}
