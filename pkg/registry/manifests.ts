import type { Readable } from "node:stream";
import type { Logger } from "pino";
import type { AgentMetrics } from "../metrics/index.js";
import {
  ALL_MANIFEST_MEDIA_TYPES,
  type Digest,
  type Reference,
  digestAlgorithm,
  digestOf,
  isDigest,
  sniffManifestMediaType,
} from "../oci/index.js";
import { type BlobInfo, type BlobStore, isStoreError, type TagStore } from "../store/index.js";
import { choosePieceSize } from "../piece/index.js";
import type { TagRecord, Tracker } from "../tracker/index.js";
import type { ManifestPeers } from "./manifest-peers.js";

/** The part of the tracker that shares tag → digest records between agents. */
export type ClusterTags = Pick<Tracker, "publishTag" | "resolveTag">;
import { RegistryError, isTransientUpstreamError } from "./errors.js";
import { statusError, upstreamErrorReason } from "./origin-fetcher.js";
import type { DescriptorSizes } from "./descriptor-sizes.js";
import { type UpstreamClient, header, readLimitedBytes } from "./upstream/upstream-client.js";

/** distribution's own limit on manifest size; larger bodies are refused rather than buffered. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface ManifestRequest {
  readonly registry: string;
  readonly name: string;
  readonly reference: Reference;
  /** The client's Accept header, forwarded upstream; all manifest types when absent. */
  readonly accept: string | undefined;
  readonly method: "GET" | "HEAD";
  readonly signal: AbortSignal;
}

/** A manifest ready to answer with: either in the store, or headers only (HEAD of one we lack), or a fresh body. */
export type ResolvedManifest =
  | {
      readonly kind: "stored";
      readonly info: BlobInfo & { mediaType: string };
      readonly source: "local" | "origin";
      readonly stale: boolean;
    }
  | { readonly kind: "headers"; readonly digest: Digest; readonly mediaType: string; readonly size: number }
  | {
      readonly kind: "body";
      readonly digest: Digest;
      readonly mediaType: string;
      readonly body: Buffer;
      readonly source: "peer" | "origin";
      readonly stale?: boolean;
    };

export interface ManifestResolverOptions {
  readonly store: BlobStore;
  readonly tags: TagStore;
  readonly upstream: UpstreamClient;
  readonly metrics: AgentMetrics;
  readonly logger: Logger;
  /** Other agents, asked for manifests by digest before the origin; absent without a tracker. */
  readonly manifestPeers?: ManifestPeers | undefined;
  /** The cluster's tag records (the tracker): published after each upstream resolution, read when the upstream is down. */
  readonly clusterTags?: ClusterTags | undefined;
  /** Learns the sizes every verified manifest gives the blobs it names (the mirror asks with them). */
  readonly descriptorSizes?: DescriptorSizes | undefined;
  readonly now?: () => number;
}

/**
 * Manifests by digest are immutable: store first, then other agents, else the upstream (verified, then stored).
 * Manifests by tag are resolved upstream on every pull (a HEAD, then a GET only when the digest is new);
 * when the upstream cannot be reached, the last digest seen for the tag is served and counted.
 */
export class ManifestResolver {
  /** Digests being written to the store by this resolver, so concurrent pulls write each once. */
  private readonly keeping = new Set<Digest>();

  constructor(private readonly options: ManifestResolverOptions) {}

  async resolve(request: ManifestRequest): Promise<ResolvedManifest> {
    if (request.reference.kind === "digest") {
      const stored = await this.stored(request.reference.digest);
      if (stored) return { kind: "stored", info: stored, source: "local", stale: false };
      const fromPeer = await this.fromPeers(request.reference.digest, request.signal);
      if (fromPeer) return fromPeer;
      return await this.fetch(request, request.reference.digest);
    }
    const tag = request.reference.tag;
    try {
      const head = await this.upstreamManifest(request, "HEAD");
      head.body.destroy();
      const digestHeader = header(head.headers, "docker-content-digest");
      if (digestHeader !== undefined && isDigest(digestHeader)) {
        const stored = await this.stored(digestHeader);
        const mediaType = header(head.headers, "content-type") ?? stored?.mediaType;
        const size = Number(header(head.headers, "content-length"));
        const known = mediaType !== undefined && Number.isSafeInteger(size);
        if (stored) {
          if (known) this.publish(request, tag, digestHeader, mediaType, size);
          return { kind: "stored", info: stored, source: "local", stale: false };
        }
        if (request.method === "HEAD" && known) {
          this.publish(request, tag, digestHeader, mediaType, size);
          return { kind: "headers", digest: digestHeader, mediaType, size };
        }
        // Otherwise the GET below records the tag once the body matches.
      }
      return await this.fetch(request, undefined);
    } catch (error) {
      if (!isTransientUpstreamError(error)) throw error;
      const fallback = await this.lastSeen(request, tag);
      if (fallback === undefined) throw error;
      this.options.metrics.tagFallbacks.inc();
      this.options.logger.warn(
        { registry: request.registry, name: request.name, tag, digest: fallback.digest, seenBy: fallback.seenBy, err: error },
        "upstream unreachable; serving the last digest seen for this tag",
      );
      return fallback.resolved;
    }
  }

  /**
   * The digest this agent last saw for the tag; only when it never saw it, the one the cluster reports
   * (the digest most nodes resolved: one member cannot move it). With the manifest from the store or a
   * peer; undefined when nobody saw the tag or its manifest is nowhere.
   */
  private async lastSeen(
    request: ManifestRequest,
    tag: string,
  ): Promise<{ digest: Digest; seenBy: "this agent" | "cluster"; resolved: ResolvedManifest } | undefined> {
    const local = this.options.tags.get(request.registry, request.name, tag);
    let cluster: TagRecord | undefined;
    if (local === undefined) {
      try {
        cluster = await this.options.clusterTags?.resolveTag({ registry: request.registry, repository: request.name, tag }, request.signal);
      } catch (error) {
        request.signal.throwIfAborted();
        this.options.logger.debug({ err: error }, "tracker could not resolve the tag");
      }
    }
    const useCluster = cluster !== undefined;
    const digest = useCluster ? cluster?.digest : local?.digest;
    if (digest === undefined) return undefined;
    const seenBy = useCluster ? "cluster" : "this agent";
    const stored = await this.stored(digest);
    if (stored) return { digest, seenBy, resolved: { kind: "stored", info: stored, source: "local", stale: true } };
    const fromPeer = await this.fromPeers(digest, request.signal);
    if (fromPeer?.kind !== "body") return undefined;
    this.remember(request, tag, digest, fromPeer.mediaType, fromPeer.body.length);
    return { digest, seenBy, resolved: { ...fromPeer, stale: true } };
  }

  private async stored(digest: Digest): Promise<(BlobInfo & { mediaType: string }) | undefined> {
    const info = await this.options.store.stat(digest);
    return info?.mediaType === undefined ? undefined : { ...info, mediaType: info.mediaType };
  }

  /** A verified copy from another agent (kept in the store), or undefined to go to the origin. */
  private async fromPeers(digest: Digest, signal: AbortSignal): Promise<ResolvedManifest | undefined> {
    const body = await this.options.manifestPeers?.fetch(digest, MAX_MANIFEST_BYTES, signal);
    if (body === undefined) return undefined;
    // ManifestPeers verifies; checking again costs microseconds and keeps this seam safe with any implementation.
    if (digestOf(body, digestAlgorithm(digest)) !== digest) {
      this.options.metrics.digestMismatches.inc({ source: "peer" });
      return undefined;
    }
    const mediaType = sniffManifestMediaType(body);
    // A manifest without a mediaType field cannot be labelled from its bytes alone; the origin's header can.
    if (mediaType === undefined) return undefined;
    this.options.descriptorSizes?.learn(body);
    await this.keep(digest, mediaType, body);
    return { kind: "body", digest, mediaType, body, source: "peer" };
  }

  /** GETs a manifest, verifies it against `expected` (or the upstream's Docker-Content-Digest) and stores it. */
  private async fetch(request: ManifestRequest, expected: Digest | undefined): Promise<ResolvedManifest> {
    const { metrics } = this.options;
    const response = await this.upstreamManifest(request, "GET");
    const body = await readLimitedBytes(response.body, MAX_MANIFEST_BYTES).catch((error: unknown) => {
      throw error instanceof RegistryError
        ? error
        : new RegistryError("ERR_UPSTREAM_TRUNCATED", "manifest body broke off", { cause: error });
    });
    metrics.originBytesFetched.inc(body.length);
    const declared = header(response.headers, "docker-content-digest");
    const algorithm =
      expected !== undefined
        ? digestAlgorithm(expected)
        : declared !== undefined && isDigest(declared)
          ? digestAlgorithm(declared)
          : "sha256";
    const digest = digestOf(body, algorithm);
    const mismatch =
      (expected !== undefined && digest !== expected) || (declared !== undefined && isDigest(declared) && declared !== digest);
    if (mismatch) {
      metrics.digestMismatches.inc({ source: "origin" });
      metrics.upstreamErrors.inc({ reason: "digest_mismatch" });
      throw new RegistryError("ERR_DIGEST_MISMATCH", `${request.registry} sent a manifest that does not match its digest`);
    }
    const mediaType = header(response.headers, "content-type") ?? sniffManifestMediaType(body) ?? ALL_MANIFEST_MEDIA_TYPES[0] ?? "";
    if (request.reference.kind === "tag") this.publish(request, request.reference.tag, digest, mediaType, body.length);
    this.options.descriptorSizes?.learn(body);
    await this.keep(digest, mediaType, body);
    return { kind: "body", digest, mediaType, body, source: "origin" };
  }

  private async upstreamManifest(
    request: ManifestRequest,
    method: "GET" | "HEAD",
  ): Promise<{ headers: Readonly<Record<string, string | string[] | undefined>>; body: Readable }> {
    const reference = request.reference.kind === "tag" ? request.reference.tag : request.reference.digest;
    try {
      const response = await this.options.upstream.request(request.registry, {
        method,
        path: `/v2/${request.name}/manifests/${reference}`,
        name: request.name,
        headers: { accept: request.accept ?? ALL_MANIFEST_MEDIA_TYPES.join(", ") },
        signal: request.signal,
      });
      if (response.status !== 200) {
        response.body.destroy();
        throw statusError(request.registry, `manifest ${request.name}:${reference}`, response.status);
      }
      return response;
    } catch (error) {
      this.options.metrics.upstreamErrors.inc({ reason: upstreamErrorReason(error) });
      throw error;
    }
  }

  private remember(request: ManifestRequest, tag: string, digest: Digest, mediaType: string, size: number): void {
    const seenAt = (this.options.now ?? Date.now)();
    this.options.tags.set(request.registry, request.name, tag, { digest, mediaType, size, seenAt });
  }

  /** Shares an upstream resolution with the cluster; a tracker that refuses it changes nothing here. */
  private publish(request: ManifestRequest, tag: string, digest: Digest, mediaType: string, size: number): void {
    this.remember(request, tag, digest, mediaType, size);
    try {
      this.options.clusterTags?.publishTag({
        registry: request.registry,
        repository: request.name,
        tag,
        digest,
        mediaType,
        size,
        seenAtMs: (this.options.now ?? Date.now)(),
      });
    } catch (error) {
      this.options.logger.debug({ err: error, tag }, "tag record not published");
    }
  }

  /** Stores a verified manifest; a concurrent store of the same digest wins and this one is skipped. */
  private async keep(digest: Digest, mediaType: string, body: Buffer): Promise<void> {
    const { store, logger } = this.options;
    if (this.keeping.has(digest) || store.getPartial(digest) !== undefined) return;
    this.keeping.add(digest);
    try {
      if ((await store.stat(digest)) !== undefined) return;
      const partial = await store.openPartial(digest, body.length, { pieceSize: choosePieceSize(body.length), mediaType });
      if (partial.appendOffset !== 0) return;
      await partial.append(body);
      await partial.commit();
    } catch (error) {
      if (isStoreError(error, "ERR_STORE_BLOB_EXISTS")) return;
      // The client still gets the manifest from memory; only the cache entry is lost.
      logger.warn({ err: error, digest }, "could not store manifest");
    } finally {
      this.keeping.delete(digest);
    }
  }
}
