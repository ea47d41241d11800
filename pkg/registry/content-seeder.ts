import type { Logger } from "pino";
import { type Digest, digestAlgorithm, digestOf } from "../oci/index.js";
import { type BlobStore, isStoreError } from "../store/index.js";
import { choosePieceSize } from "../piece/index.js";
import type { BlobFetcher, BlobRequest } from "./blob-fetcher.js";
import { RegistryError, isRegistryError } from "./errors.js";

/** Where the bytes of a seeded manifest or blob came from. */
export type SeedSource = "local" | "origin" | "peer";

export interface SeedResult {
  readonly source: SeedSource;
  readonly bytes: number;
}

export interface ContentSeederOptions {
  readonly store: BlobStore;
  /** The agent's fetcher: with a tracker the swarm (store, peers, origin when granted), else the origin. */
  readonly fetcher: BlobFetcher;
  readonly logger: Logger;
}

/**
 * Puts content into the store ahead of any pull (prefetch), through the same seams a pull uses: blobs
 * through the BlobFetcher, so concurrent pulls share the transfer and the origin still sends each blob
 * about once across the cluster; manifests from bytes the caller already verified elsewhere, checked
 * again here against their digest before they are stored.
 */
export class ContentSeeder {
  constructor(private readonly options: ContentSeederOptions) {}

  /** Stores a manifest's exact bytes with its media type; "local" when the store already has it. */
  async storeManifest(digest: Digest, mediaType: string, body: Uint8Array, signal: AbortSignal): Promise<SeedResult> {
    signal.throwIfAborted();
    const { store } = this.options;
    if ((await store.stat(digest)) !== undefined) return { source: "local", bytes: body.length };
    if (digestOf(body, digestAlgorithm(digest)) !== digest)
      throw new RegistryError("ERR_DIGEST_MISMATCH", `manifest bytes do not match ${digest}`);
    const open = store.getPartial(digest);
    if (open !== undefined) {
      // Someone (a pull) is writing it right now: theirs is the same content.
      await open.whenSettled();
      if ((await store.stat(digest)) !== undefined) return { source: "local", bytes: body.length };
    }
    try {
      const partial = await store.openPartial(digest, body.length, { pieceSize: choosePieceSize(body.length), mediaType });
      // At offset 0 explicitly: if a pull opened the same partial meanwhile, bytes it already wrote are skipped.
      if (partial.state === "open") await partial.append(body, 0);
      if (partial.state === "open") await partial.commit();
    } catch (error: unknown) {
      if (isStoreError(error, "ERR_STORE_BLOB_EXISTS")) return { source: "local", bytes: body.length };
      throw error;
    }
    if ((await store.stat(digest)) === undefined) throw new RegistryError("ERR_DIGEST_MISMATCH", `manifest ${digest} could not be stored`);
    return { source: "origin", bytes: body.length };
  }

  /**
   * Fetches a blob into the store and resolves once it is verified and visible there. Rejects with why
   * it could not be (the origin's answer, a full store, a digest mismatch) or with the signal's reason;
   * an aborted fetch keeps its pieces for the next attempt.
   */
  async fetchBlob(request: BlobRequest, signal: AbortSignal): Promise<SeedResult> {
    signal.throwIfAborted();
    const { store, fetcher } = this.options;
    const held = await store.stat(request.digest);
    if (held !== undefined) return { source: "local", bytes: held.size };
    let lease;
    try {
      lease = await fetcher.acquire(request, signal);
    } catch (error: unknown) {
      // Completed by a pull between the stat and the acquire.
      const done = isStoreError(error, "ERR_STORE_BLOB_EXISTS") ? await store.stat(request.digest) : undefined;
      if (done !== undefined) return { source: "local", bytes: done.size };
      throw error;
    }
    try {
      const { partial } = lease;
      if (partial.size > 0) {
        // The last byte is released only once the whole blob matched its digest; an aborted fetch
        // fails this read with its reason.
        for await (const _ of partial.createReadStream({ start: partial.size - 1, signal }) as AsyncIterable<Buffer>) {
          // One byte: the read is the wait.
        }
      }
      await partial.whenSettled();
      if (partial.state !== "committed" && (await store.stat(request.digest)) === undefined) {
        throw new RegistryError("ERR_UPSTREAM_TRUNCATED", `the fetch of ${request.digest} ended without the blob`);
      }
      return { source: lease.source, bytes: partial.size };
    } finally {
      lease.release();
    }
  }
}

/**
 * A stable short code for why seeding failed, for reports and status reasons: auth, not_found,
 * registry_unknown, store_full, digest_mismatch, unavailable, cancelled or failed.
 */
export function seedErrorCode(error: unknown): string {
  if (error instanceof DOMException && (error.name === "AbortError" || error.name === "TimeoutError")) return "cancelled";
  if (isStoreError(error, "ERR_STORE_QUOTA_EXCEEDED")) return "store_full";
  if (isStoreError(error, "ERR_STORE_DIGEST_MISMATCH") || isRegistryError(error, "ERR_DIGEST_MISMATCH")) return "digest_mismatch";
  if (!isRegistryError(error)) {
    const cause = error instanceof Error ? error.cause : undefined;
    return cause !== undefined && cause !== error ? seedErrorCode(cause) : "failed";
  }
  switch (error.code) {
    case "ERR_UPSTREAM_AUTH":
      return "auth";
    case "ERR_UPSTREAM_NOT_FOUND":
      return "not_found";
    case "ERR_REGISTRY_UNKNOWN":
    case "ERR_REGISTRY_UNNAMED":
      return "registry_unknown";
    default:
      return "unavailable";
  }
}
