import { pino } from "pino";
import { AgentMetrics } from "../../metrics/index.js";
import { type BlobStore, MemoryBlobStore, MemoryTagStore, type TagStore } from "../../store/index.js";
import type { BlobFetcher } from "../blob-fetcher.js";
import type { ManifestPeers } from "../manifest-peers.js";
import type { ClusterTags } from "../manifests.js";
import { Mirror } from "../mirror.js";
import { MirrorServer } from "../mirror-server.js";
import { OriginFetcher } from "../origin-fetcher.js";
import { type BasicCredentials } from "../upstream/credentials.js";
import { UpstreamClient } from "../upstream/upstream-client.js";
import { FakeUpstream } from "./fake-upstream.js";

export interface MirrorFixtureOptions {
  readonly responseStartTimeoutMs?: number;
  readonly responseStallTimeoutMs?: number;
  readonly headersTimeoutMs?: number;
  readonly bodyStallTimeoutMs?: number;
  /** Credentials the mirror holds for the fake upstream. */
  readonly credentials?: BasicCredentials;
  readonly store?: BlobStore;
  /** Registry for requests that name none; default: the fake upstream. */
  readonly defaultRegistry?: string | null;
  /** Other agents the mirror asks for manifests by digest. */
  readonly manifestPeers?: ManifestPeers;
  /** The cluster's tag records the mirror publishes to and falls back on. */
  readonly clusterTags?: ClusterTags;
  /** What produces the blobs the store lacks; default: an OriginFetcher on the fake upstream. */
  readonly fetcher?: (store: BlobStore) => BlobFetcher;
}

/** A mirror on 127.0.0.1:0 in front of a FakeUpstream, with in-memory store and tags. */
export class MirrorFixture {
  private constructor(
    readonly upstream: FakeUpstream,
    readonly store: BlobStore,
    readonly tags: TagStore,
    readonly metrics: AgentMetrics,
    readonly server: MirrorServer,
    /** What the mirror logged at info and above (parsed pino lines), for tests of what an operator sees. */
    readonly mirrorLogs: readonly Record<string, unknown>[],
    private readonly closers: (() => Promise<void>)[],
  ) {}

  static async start(options: MirrorFixtureOptions = {}): Promise<MirrorFixture> {
    const upstream = await FakeUpstream.start();
    const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" });
    const store = options.store ?? new MemoryBlobStore();
    const tags = new MemoryTagStore();
    const metrics = new AgentMetrics({ version: "test", collectDefaults: false });
    const client = new UpstreamClient({
      upstreams: new Map([[upstream.host, upstream.url]]),
      ...(options.credentials ? { credentials: new Map([[upstream.host, options.credentials]]) } : {}),
      bodyStallTimeoutMs: options.bodyStallTimeoutMs ?? 5_000,
      headersTimeoutMs: 5_000,
      logger,
    });
    const fetcher = options.fetcher?.(store) ?? new OriginFetcher({ store, upstream: client, metrics, logger });
    const mirrorLogs: Record<string, unknown>[] = [];
    const mirrorLogger = pino({ level: "info" }, { write: (line: string) => mirrorLogs.push(JSON.parse(line) as Record<string, unknown>) });
    const mirror = new Mirror({
      store,
      tags,
      upstream: client,
      fetcher,
      manifestPeers: options.manifestPeers,
      clusterTags: options.clusterTags,
      metrics,
      logger: mirrorLogger,
      defaultRegistry: options.defaultRegistry === null ? undefined : (options.defaultRegistry ?? upstream.host),
      responseStartTimeoutMs: options.responseStartTimeoutMs ?? 5_000,
      ...(options.responseStallTimeoutMs === undefined ? {} : { responseStallTimeoutMs: options.responseStallTimeoutMs }),
    });
    const server = await MirrorServer.start({
      host: "127.0.0.1",
      port: 0,
      mirror,
      logger,
      ...(options.headersTimeoutMs === undefined ? {} : { headersTimeoutMs: options.headersTimeoutMs }),
    });
    return new MirrorFixture(upstream, store, tags, metrics, server, mirrorLogs, [
      () => server.close(),
      () => fetcher.close(),
      () => client.close(),
      () => upstream.close(),
      () => store.close(),
    ]);
  }

  get url(): string {
    return `http://127.0.0.1:${this.server.address.port}`;
  }

  /** Mirror URL of a blob, naming the fake upstream with `?ns=` as containerd does. */
  blobUrl(name: string, digest: string): string {
    return `${this.url}/v2/${name}/blobs/${digest}?ns=${encodeURIComponent(this.upstream.host)}`;
  }

  manifestUrl(name: string, reference: string): string {
    return `${this.url}/v2/${name}/manifests/${reference}?ns=${encodeURIComponent(this.upstream.host)}`;
  }

  /** Value of a counter/gauge series, 0 if absent. */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const metric = await this.metrics.registry.getSingleMetric(name)?.get();
    const series = metric?.values.find((v) =>
      Object.entries(labels).every(([k, val]) => String((v.labels as Record<string, unknown>)[k]) === val),
    );
    return series?.value ?? 0;
  }

  upstreamRequests(kind: "manifest" | "blob" | "token" | "storage", method?: string): number {
    return this.upstream.requests.filter((r) => r.kind === kind && (method === undefined || r.method === method)).length;
  }

  async close(): Promise<void> {
    for (const close of this.closers) await close().catch(() => undefined);
  }
}
