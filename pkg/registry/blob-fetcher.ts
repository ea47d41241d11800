import type { Digest } from "../oci/index.js";
import type { PartialBlob } from "../store/index.js";
import type { BasicCredentials } from "./upstream/credentials.js";

export interface BlobRequest {
  /** Registry host as in image references, e.g. `ghcr.io`. */
  readonly registry: string;
  readonly name: string;
  readonly digest: Digest;
  /**
   * The blob's size as a manifest's descriptor gives it, when the agent saw one naming this digest: what
   * peers and the tracker say about its size is believed only when it agrees.
   */
  readonly size?: number | undefined;
  /** Credentials for the origin fetch of this request only (a prefetch's pull secret); the agent's own otherwise. */
  readonly credentials?: BasicCredentials | undefined;
  /**
   * Called while acquire() is still choosing a source, at each sign that one is under way: the tracker names
   * another agent fetching the blob from the origin (its grantee, which the tracker moves when it stalls) or
   * asks to be asked again while it rebuilds, or this agent starts fetching the blob itself. The mirror
   * counts it as progress toward a response's start, within a bound of its own.
   */
  readonly onSourceProgress?: (() => void) | undefined;
}

/** A reader's hold on a blob being fetched. Release it when done reading, successfully or not. */
export interface BlobLease {
  readonly partial: PartialBlob;
  /** Where the bytes come from, for the served-bytes metric. */
  readonly source: "origin" | "peer";
  /** Content-Type the origin gave the blob, when known. */
  readonly contentType: string | undefined;
  /**
   * When the blob last came closer somewhere else (ms, performance.now clock): for a blob fetched from peers,
   * a holder gained pieces or a peer sent bytes of it. The mirror waiting for the first piece takes it as
   * progress, within limits, since it is what peers claim. Absent: only the pieces this node holds count.
   */
  readonly progressAtMs?: (() => number) | undefined;
  release(): void;
}

/**
 * The seam between the mirror and whatever produces blobs it lacks: the origin (OriginFetcher), or
 * the swarm in front of it (pkg/peer's SwarmFetcher). Concurrent acquires of one digest share one transfer; the transfer stops (keeping
 * what it has for a later resume) when the last lease is released before it finishes.
 */
export interface BlobFetcher {
  /**
   * Resolves once the transfer has started and the blob's size is known; rejects with a RegistryError
   * (e.g. ERR_UPSTREAM_NOT_FOUND) if it cannot start, or with the signal's reason if aborted first.
   */
  acquire(request: BlobRequest, signal: AbortSignal): Promise<BlobLease>;
  /** Stops every transfer. */
  close(): Promise<void>;
}
