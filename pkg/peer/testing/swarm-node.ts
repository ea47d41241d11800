import { randomUUID } from "node:crypto";
import type { Readable } from "node:stream";
import { type Logger, pino } from "pino";
import type { IdentitySource } from "../../identity/index.js";
import { AgentMetrics } from "../../metrics/index.js";
import type { Digest } from "../../oci/index.js";
import { OriginFetcher } from "../../registry/origin-fetcher.js";
import { UpstreamClient } from "../../registry/upstream/upstream-client.js";
import type { BlobStore } from "../../store/blob-store.js";
import { MemoryBlobStore } from "../../store/memory-blob-store.js";
import { LocalTracker, type MemoryTracker } from "../../tracker/index.js";
import type { AgentIdentity, Tracker } from "../../tracker/tracker.js";
import { AgentSwarm } from "../agent-swarm.js";
import type { InventorySync } from "../inventory.js";
import type { PeerServer } from "../peer-server.js";
import type { SwarmFetcher } from "../swarm-fetcher.js";
import type { SwarmTuning } from "../swarm-tuning.js";

export interface SwarmNodeOptions {
  readonly name: string;
  readonly zone?: string;
  /** The tracker in process (a LocalTracker session), or how to reach one (e.g. a GrpcTrackerClient). */
  readonly tracker: MemoryTracker | ((identity: AgentIdentity, logger: Logger) => Tracker);
  /** Address the peer server binds (the node's "pod IP"); default 127.0.0.1. */
  readonly host?: string;
  /** Node name the agent registers with; default `name`. */
  readonly nodeName?: string;
  /** The origin registry: host → base URL. */
  readonly origin: { host: string; url: string };
  /** Wraps the store the peer server reads from (e.g. to corrupt what this node serves). */
  readonly servedStore?: (store: BlobStore) => BlobStore;
  /** Replaces the tracker client (e.g. one that is unreachable). */
  readonly trackerOverride?: Tracker;
  readonly tuning?: Partial<SwarmTuning>;
  readonly uploadBytesPerSecond?: number;
  /** The agent's tracker id; default the name and a random suffix. */
  readonly agentId?: string;
  /** Read pieces over the Exchange stream (default) or with a ReadPieces call per request. */
  readonly exchange?: boolean;
  /** Hides the zone from the swarm scheduler (the tracker still knows it): the no-preference baseline. */
  readonly ignoreZone?: boolean;
  /** The agent does not know its zone (Kubernetes: no --zone); only the tracker does, and tells it in lookups. */
  readonly zoneFromTracker?: boolean;
  /** This agent's certificate: peers then talk mutual TLS. */
  readonly tls?: IdentitySource;
  /** Commit's durability step takes this long in the node's store (MemoryBlobStoreOptions.publishDelayMs). */
  readonly publishDelayMs?: number;
}

/** One agent in process: a memory store, the origin fetcher and the agent's peer-to-peer side (AgentSwarm). */
export class SwarmNode {
  private constructor(
    readonly name: string,
    readonly agentId: string,
    readonly store: BlobStore,
    readonly fetcher: SwarmFetcher,
    readonly metrics: AgentMetrics,
    readonly peerServer: PeerServer,
    readonly inventory: InventorySync,
    /** This node's tracker session (to announce partial blobs in tests). */
    readonly tracker: Tracker,
    private readonly closers: (() => Promise<void>)[],
  ) {}

  static async start(options: SwarmNodeOptions): Promise<SwarmNode> {
    const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" }).child({ node: options.name });
    const metrics = new AgentMetrics({ version: "test", collectDefaults: false });
    const store = new MemoryBlobStore({ publishDelayMs: options.publishDelayMs });
    const upstream = new UpstreamClient({ upstreams: new Map([[options.origin.host, options.origin.url]]), logger });
    const origin = new OriginFetcher({ store, upstream, metrics, logger });
    const trackerOf = (identity: AgentIdentity): Tracker =>
      options.trackerOverride ??
      (typeof options.tracker === "function"
        ? options.tracker(identity, logger)
        : new LocalTracker({ tracker: options.tracker, identity, logger }));
    const swarm = await AgentSwarm.start({
      store,
      origin,
      listen: { host: options.host ?? "127.0.0.1", port: 0 },
      nodeName: options.nodeName ?? options.name,
      zone: options.zone ?? "",
      tracker: trackerOf,
      uploadBytesPerSecond: options.uploadBytesPerSecond,
      metrics,
      logger,
      tuning: options.tuning,
      peerClient: { stallTimeoutMs: 2_000, ...(options.exchange === undefined ? {} : { exchange: options.exchange }) },
      agentId: options.agentId ?? `${options.name}-${randomUUID().slice(0, 8)}`,
      zoneKnowledge: options.ignoreZone === true ? "none" : options.zoneFromTracker === true ? "tracker" : "self",
      servedStore: options.servedStore,
      closeGraceMs: 100,
      tls: options.tls,
    });
    return new SwarmNode(options.name, swarm.agentId, store, swarm.fetcher, metrics, swarm.peerServer, swarm.inventory, swarm.tracker, [
      () => swarm.close(),
      () => origin.close(),
      () => upstream.close(),
      () => store.close(),
    ]);
  }

  /** Fetches a blob the way the mirror does and returns its bytes as they were streamed to the "client". */
  async pull(
    registry: string,
    name: string,
    digest: Digest,
    signal = AbortSignal.timeout(60_000),
    /** The size a manifest's descriptor gives the blob, when the "client" knows it. */
    size?: number,
  ): Promise<{ bytes: Buffer; source: string }> {
    const info = await this.store.stat(digest);
    if (info) return { bytes: await collect(await this.store.createReadStream(digest, { signal })), source: "local" };
    const lease = await this.fetcher.acquire({ registry, name, digest, ...(size === undefined ? {} : { size }) }, signal);
    try {
      return { bytes: await collect(lease.partial.createReadStream({ signal })), source: lease.source };
    } finally {
      lease.release();
    }
  }

  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const metric = await this.metrics.registry.getSingleMetric(name)?.get();
    return (metric?.values ?? [])
      .filter((v) => Object.entries(labels).every(([k, val]) => String((v.labels as Record<string, unknown>)[k]) === val))
      .reduce((sum, v) => sum + v.value, 0);
  }

  /** Stops the node abruptly (as a killed process would vanish): peer server, tracker session and all. */
  async stop(): Promise<void> {
    for (const close of this.closers) await close().catch(() => undefined);
  }
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}
