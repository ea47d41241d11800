import type { Digest } from "../oci/index.js";
import type { BlobReader } from "./blob-store.js";

/** A complete blob the node holds outside the agent's own store. */
export interface ExternalBlob {
  readonly digest: Digest;
  readonly size: number;
}

/** A change to what an external source holds. */
export type ExternalSourceEvent =
  { readonly type: "added"; readonly blobs: readonly ExternalBlob[] } | { readonly type: "removed"; readonly digests: readonly Digest[] };

/**
 * Read-only, content-addressed blobs the node already holds outside the agent's store: the container
 * runtime's content store. CompositeBlobStore answers reads from it after the agent's own store, so the
 * node keeps one copy of each blob. Implementations: ContainerdContentSource (pkg/containerd), and
 * MemoryExternalSource for tests (./testing/memory-external-source.ts).
 *
 * The source's content is trusted as the runtime trusts it (the runtime verified each blob's digest when
 * it committed it); receivers still check every piece and every blob, as with any holder.
 */
export interface ExternalBlobSource {
  /** Names the source in logs and errors, e.g. "containerd". */
  readonly name: string;
  /** The blob if the source held it when last looked at (a snapshot: no I/O). */
  get(digest: Digest): ExternalBlob | undefined;
  /** Every blob of the snapshot. */
  list(): ExternalBlob[];
  /** Changes to the snapshot, as the source notices them. Returns the unsubscribe function. */
  subscribe(listener: (event: ExternalSourceEvent) => void): () => void;
  /**
   * Opens a blob for positional reads. It is held against removal by the source (a containerd lease)
   * until `close`. Throws StoreError ERR_STORE_BLOB_NOT_FOUND when the source does not hold it or cannot
   * be reached now (the caller then looks elsewhere), and drops it from the snapshot if it is gone.
   */
  openReader(digest: Digest, signal?: AbortSignal): Promise<BlobReader>;
  close(): Promise<void>;
}
