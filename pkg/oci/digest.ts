import { createHash, type Hash } from "node:crypto";
import { OciError } from "./errors.js";

/** A validated digest string such as `sha256:<64 hex>`. Branded so unvalidated strings cannot flow in. */
export type Digest = string & { readonly __digest: unique symbol };

export type DigestAlgorithm = "sha256" | "sha512";

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };
// Grammar of the OCI image spec (descriptor.md): algorithm ":" encoded.
const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const LOWER_HEX = /^[a-f0-9]+$/;
/** Longest digest string we even look at; sha512 is 7 + 128. */
const MAX_DIGEST_LENGTH = 256;

/** Parses and validates a digest. Only sha256 and sha512 are accepted; they are the registered algorithms. */
export function parseDigest(value: string): Digest {
  if (value.length > MAX_DIGEST_LENGTH || !DIGEST_GRAMMAR.test(value)) {
    throw new OciError("ERR_OCI_DIGEST_INVALID", `invalid digest ${JSON.stringify(value.slice(0, 80))}`);
  }
  const colon = value.indexOf(":");
  const algorithm = value.slice(0, colon);
  const encoded = value.slice(colon + 1);
  if (algorithm !== "sha256" && algorithm !== "sha512") {
    throw new OciError("ERR_OCI_DIGEST_UNSUPPORTED", `unsupported digest algorithm ${JSON.stringify(algorithm)}`);
  }
  if (encoded.length !== HEX_LENGTH[algorithm] || !LOWER_HEX.test(encoded)) {
    throw new OciError("ERR_OCI_DIGEST_INVALID", `invalid ${algorithm} digest: expected ${HEX_LENGTH[algorithm]} lowercase hex characters`);
  }
  return value as Digest;
}

export function isDigest(value: string): value is Digest {
  try {
    parseDigest(value);
    return true;
  } catch {
    return false;
  }
}

export function digestAlgorithm(digest: Digest): DigestAlgorithm {
  return digest.slice(0, digest.indexOf(":")) as DigestAlgorithm;
}

/** The hex part of a digest: safe to use as a file name because parseDigest only admits [a-f0-9]. */
export function digestHex(digest: Digest): string {
  return digest.slice(digest.indexOf(":") + 1);
}

export function createDigestHash(algorithm: DigestAlgorithm): Hash {
  return createHash(algorithm);
}

/** Digest of an in-memory value (manifests, test data); blobs are hashed as they stream. */
export function digestOf(data: Uint8Array | string, algorithm: DigestAlgorithm = "sha256"): Digest {
  return `${algorithm}:${createHash(algorithm).update(data).digest("hex")}` as Digest;
}

/** Incrementally hashes a stream of chunks and checks the result against an expected digest. */
export class DigestVerifier {
  private readonly hash: Hash;
  private bytes = 0;

  constructor(readonly expected: Digest) {
    this.hash = createDigestHash(digestAlgorithm(expected));
  }

  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
    this.bytes += chunk.byteLength;
  }

  get bytesSeen(): number {
    return this.bytes;
  }

  /** Returns the digest actually computed; compare with `expected`. Can be called once. */
  finish(): Digest {
    return `${digestAlgorithm(this.expected)}:${this.hash.digest("hex")}` as Digest;
  }
}
