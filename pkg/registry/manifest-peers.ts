import type { Digest } from "../oci/index.js";

/**
 * Where a manifest by digest comes from when this node lacks it and before the origin is asked:
 * other agents. Manifests are immutable and small, so a single verified copy from one peer is enough;
 * this also keeps pulls working (and origin rate limits untouched) when the origin is down.
 */
export interface ManifestPeers {
  /**
   * The manifest's bytes, verified against `digest`, from another agent; undefined when no agent holds
   * it or none of them answered correctly. Peer failures are not thrown: the caller falls back to the
   * origin. Rejects only with the signal's reason when it aborts.
   */
  fetch(digest: Digest, maxBytes: number, signal: AbortSignal): Promise<Buffer | undefined>;
}
