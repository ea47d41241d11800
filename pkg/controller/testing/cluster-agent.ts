import { randomUUID } from "node:crypto";
import type { Readable } from "node:stream";
import { pino } from "pino";
import { AgentMetrics } from "../../metrics/index.js";
import type { Digest } from "../../oci/index.js";
import { InventorySync } from "../../peer/inventory.js";
import { PeerClient } from "../../peer/peer-client.js";
import { PeerServer } from "../../peer/peer-server.js";
import { PieceHashIndex } from "../../peer/piece-hashes.js";
import { SwarmFetcher } from "../../peer/swarm-fetcher.js";
import type { SwarmTuning } from "../../peer/swarm-download.js";
import { OriginFetcher } from "../../registry/origin-fetcher.js";
import { UpstreamClient } from "../../registry/upstream/upstream-client.js";
import { MemoryBlobStore } from "../../store/memory-blob-store.js";
import { GrpcTrackerClient } from "../../tracker/index.js";

export interface ClusterAgentOptions {
  /** The Pod's name (for logs). */
  readonly name: string;
  readonly nodeName: string;
  /** The Pod IP: a 127.0.0.x address the peer server binds and the tracker sees the agent come from. */
  readonly podIp: string;
  /** The zone the agent claims; the Kubernetes membership replaces it with its Node's label. */
  readonly claimedZone?: string;
  /** host:port of the tracker Service (a ServiceForwarder endpoint for this pod IP). */
  readonly trackerAddress: string;
  readonly origin: { readonly host: string; readonly url: string };
  readonly hashDir: string;
  readonly tuning?: Partial<SwarmTuning>;
}

/**
 * One agent in process as it runs in a Pod: a peer server on its pod IP, a gRPC tracker session through
 * the Service (reconnecting with short backoff), the swarm fetcher and inventory sync.
 */
export class ClusterAgent {
  private constructor(
    readonly agentId: string,
    readonly tracker: GrpcTrackerClient,
    readonly store: MemoryBlobStore,
    private readonly fetcher: SwarmFetcher,
    private readonly closers: (() => Promise<void>)[],
  ) {}

  static async start(options: ClusterAgentOptions): Promise<ClusterAgent> {
    const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" }).child({ agent: options.name });
    const metrics = new AgentMetrics({ version: "test", collectDefaults: false });
    const store = new MemoryBlobStore();
    const peerServer = await PeerServer.start({ host: options.podIp, port: 0, store, metrics, logger, closeGraceMs: 100 });
    const agentId = `${options.name}-${randomUUID().slice(0, 8)}`;
    const tracker = new GrpcTrackerClient({
      address: options.trackerAddress,
      identity: { agentId, nodeName: options.nodeName, zone: options.claimedZone ?? "", peerAddress: peerServer.address },
      logger,
      initialBackoffMs: 100,
      maxBackoffMs: 400,
      lookupTimeoutMs: 2_000,
    });
    const upstream = new UpstreamClient({ upstreams: new Map([[options.origin.host, options.origin.url]]), logger });
    const origin = new OriginFetcher({ store, upstream, metrics, logger });
    const pieces = new PeerClient({ logger, metrics, stallTimeoutMs: 2_000 });
    const hashIndex = new PieceHashIndex(`${options.hashDir}/${options.name}`);
    const fetcher = new SwarmFetcher({ store, tracker, pieces, origin, hashIndex, metrics, logger, ...(options.tuning === undefined ? {} : { tuning: options.tuning }) });
    const inventory = new InventorySync({ store, tracker, hashIndex, pendingHashes: (d) => fetcher.completedHashes(d), logger });
    await inventory.start();
    return new ClusterAgent(agentId, tracker, store, fetcher, [
      () => inventory.stop(),
      () => fetcher.close(),
      () => {
        pieces.close();
        return Promise.resolve();
      },
      () => origin.close(),
      () => upstream.close(),
      () => tracker.close(),
      () => peerServer.close(),
      () => store.close(),
    ]);
  }

  /** Fetches a blob the way the mirror does: local store, else the swarm (peers, else the origin grant). */
  async pull(registry: string, name: string, digest: Digest, signal = AbortSignal.timeout(30_000)): Promise<{ bytes: Buffer; source: string }> {
    if (await this.store.stat(digest)) return { bytes: await collect(await this.store.createReadStream(digest, { signal })), source: "local" };
    const lease = await this.fetcher.acquire({ registry, name, digest }, signal);
    try {
      return { bytes: await collect(lease.partial.createReadStream({ signal })), source: lease.source };
    } finally {
      lease.release();
    }
  }

  async stop(): Promise<void> {
    for (const close of this.closers) await close().catch(() => undefined);
  }
}

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}
