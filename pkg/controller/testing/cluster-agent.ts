import { pino } from "pino";
import { CertificateManager, GrpcCertificateIssuer, type TlsMaterial } from "../../identity/index.js";
import type { Digest } from "../../oci/index.js";
import type { SwarmTuning } from "../../peer/swarm-tuning.js";
import { SwarmNode } from "../../peer/testing/swarm-node.js";
import { AgentPrefetcher } from "../../prefetch/index.js";
import { ContentSeeder } from "../../registry/index.js";
import type { BlobStore } from "../../store/index.js";
import { GrpcTrackerClient } from "../../tracker/index.js";
import type { Tracker } from "../../tracker/tracker.js";

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
  readonly tuning?: Partial<SwarmTuning>;
  /** Take the zone the tracker ranks the agent by (as agents in Kubernetes do) instead of ignoring zones. */
  readonly zoneFromTracker?: boolean;
  /** Where to dial a leader address a follower names (the pod network keeping the pod IP as source). */
  readonly dialLeader?: (leaderAddress: string) => string;
  /** host:port of the certificate issuer (a ServiceForwarder endpoint for this pod IP). */
  readonly issuerAddress: string;
  /** The Pod's projected ServiceAccount token (read for every certificate request). */
  readonly token: () => Promise<string>;
  /** The CA bundle agents trust (the chart's CA ConfigMap). */
  readonly trustBundlePem: string;
}

/**
 * One agent in process as it runs in a Pod: it gets its certificate from the controller's issuer with
 * its token (rotating it like `shoal agent`), its peer server binds its pod IP with mutual TLS, its
 * tracker session goes through the Service over gRPC with TLS (reconnecting with short backoff), and
 * it takes ImagePrefetch assignments over that session as `shoal agent` does.
 */
export class ClusterAgent {
  private constructor(
    private readonly node: SwarmNode,
    readonly prefetcher: AgentPrefetcher,
    readonly certificate: CertificateManager,
  ) {}

  static async start(options: ClusterAgentOptions): Promise<ClusterAgent> {
    const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" }).child({ node: options.name });
    const sessions: GrpcTrackerClient[] = [];
    const certificate = new CertificateManager({
      issuer: new GrpcCertificateIssuer({
        address: options.issuerAddress,
        token: options.token,
        trustBundle: () => Promise.resolve(options.trustBundlePem),
      }),
      role: "agent",
      requestName: options.nodeName,
      logger: logger.child({ component: "certificate" }),
      retryInitialMs: 100,
      retryMaxMs: 1_000,
    });
    certificate.start();
    const node = await SwarmNode.start({
      tls: certificate,
      name: options.name,
      nodeName: options.nodeName,
      host: options.podIp,
      zone: options.claimedZone ?? "",
      // By default the scheduler ignores the claimed zone: most tests are about what the tracker makes of it.
      ...(options.zoneFromTracker === true ? { zoneFromTracker: true } : { ignoreZone: true }),
      tracker: (identity, trackerLogger) => {
        const client = new GrpcTrackerClient({
          address: options.trackerAddress,
          identity,
          logger: trackerLogger,
          tls: certificate,
          initialBackoffMs: 100,
          maxBackoffMs: 400,
          lookupTimeoutMs: 2_000,
          ...(options.dialLeader === undefined ? {} : { dialLeader: options.dialLeader }),
        });
        sessions.push(client);
        return client;
      },
      origin: options.origin,
      ...(options.tuning === undefined ? {} : { tuning: options.tuning }),
    });
    const session = sessions[0];
    if (session === undefined) throw new Error("the swarm node made no tracker session");
    const prefetcher = new AgentPrefetcher({
      channel: session,
      seeder: new ContentSeeder({ store: node.store, fetcher: node.fetcher, logger }),
      metrics: node.metrics,
      logger,
      reportIntervalMs: 100,
    });
    prefetcher.start();
    return new ClusterAgent(node, prefetcher, certificate);
  }

  /** host:port of its peer server (mutual TLS). */
  get peerAddress(): string {
    return this.node.peerServer.address;
  }

  /** The certificate the agent holds now. */
  get material(): TlsMaterial | undefined {
    return this.certificate.current();
  }

  get agentId(): string {
    return this.node.agentId;
  }

  get tracker(): Tracker {
    return this.node.tracker;
  }

  get store(): BlobStore {
    return this.node.store;
  }

  /** Fetches a blob the way the mirror does: local store, else the swarm (peers, else the origin grant). */
  pull(registry: string, name: string, digest: Digest, signal = AbortSignal.timeout(30_000)): Promise<{ bytes: Buffer; source: string }> {
    return this.node.pull(registry, name, digest, signal);
  }

  metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    return this.node.metric(name, labels);
  }

  /** Deletes a blob from the agent's store (benchmarks keep memory bounded); it is withdrawn from the tracker. */
  async forget(digest: Digest): Promise<void> {
    await this.node.store.delete(digest);
  }

  async stop(): Promise<void> {
    await this.prefetcher.stop();
    await this.node.stop();
    await this.certificate.close();
  }
}
