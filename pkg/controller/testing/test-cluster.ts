import { pino } from "pino";
import { CertificateAuthority } from "../../identity/index.js";
import { KubeApiDouble, ServiceForwarder } from "../../k8s/testing/index.js";
import { ControllerMetrics, MetricsServer } from "../../metrics/index.js";
import { FakeUpstream } from "../../registry/testing/fake-upstream.js";
import type { KubernetesControllerOptions } from "../controller-options.js";
import { KubernetesController } from "../kubernetes-controller.js";
import { ClusterAgent } from "./cluster-agent.js";

export const NAMESPACE = "shoal";
export const SELECTOR = "app.kubernetes.io/name=shoal,app.kubernetes.io/component=agent";
export const CA_SECRET = "shoal-ca";
export const AGENT_SERVICE_ACCOUNT = "shoal-agent";
export const TOKEN_AUDIENCE = "shoal";
/** Short but realistic proportions: renew deadline < lease duration, retry well below both. */
export const TIMINGS = { leaseDurationMs: 2_000, renewDeadlineMs: 1_200, retryPeriodMs: 250 } as const;

export interface Replica {
  readonly identity: string;
  readonly controller: KubernetesController;
  readonly metrics: ControllerMetrics;
  readonly readyUrl: string;
  readonly metricsServer: MetricsServer;
  stopped: boolean;
}

/**
 * A cluster on loopback: the API double, controller replicas each with a /readyz, a Service forwarder
 * in front of their trackers, an origin registry, and agents on 127.0.0.x "pod IPs".
 */
export class TestCluster {
  readonly replicas = new Map<string, Replica>();
  private readonly agents: ClusterAgent[] = [];
  /** Pod IP → replica tracker address → the direct endpoint from that pod IP (the pod network). */
  private readonly podRoutes = new Map<string, Map<string, string>>();

  private constructor(
    readonly api: KubeApiDouble,
    readonly forwarder: ServiceForwarder,
    /** The same Service's issuer port. */
    readonly issuerForwarder: ServiceForwarder,
    readonly origin: FakeUpstream,
    readonly ca: CertificateAuthority,
    /** The CA's key (PEM), as the Secret holds it. */
    readonly caKeyPem: string,
  ) {}

  static async start(): Promise<TestCluster> {
    const api = await KubeApiDouble.start({ bookmarkIntervalMs: 5_000 });
    const origin = await FakeUpstream.start();
    const ref: { cluster?: TestCluster } = {};
    const forwarder = await ServiceForwarder.start({
      probeIntervalMs: 50,
      backends: () =>
        [...(ref.cluster?.replicas.values() ?? [])]
          .filter((r) => !r.stopped)
          .map((r) => ({ target: r.controller.trackerAddress, readyUrl: r.readyUrl })),
    });
    const issuerForwarder = await ServiceForwarder.start({
      probeIntervalMs: 50,
      backends: () =>
        [...(ref.cluster?.replicas.values() ?? [])]
          .filter((r) => !r.stopped)
          .map((r) => ({ target: r.controller.issuerAddress, readyUrl: r.readyUrl })),
    });
    // The chart's CA Secret, made the way helm's genCA would (a throwaway CA).
    const { ca, certificatePem, keyPem } = CertificateAuthority.createSelfSigned({
      commonName: "shoal test CA",
      lifetimeMs: 24 * 3_600_000,
    });
    api.putSecret({
      namespace: NAMESPACE,
      name: CA_SECRET,
      type: "kubernetes.io/tls",
      data: { "tls.crt": certificatePem, "tls.key": keyPem },
    });
    ref.cluster = new TestCluster(api, forwarder, issuerForwarder, origin, ca, keyPem);
    return ref.cluster;
  }

  async startReplica(identity: string, extra: Partial<KubernetesControllerOptions> = {}): Promise<Replica> {
    const metrics = new ControllerMetrics({ version: "test", collectDefaults: false });
    const logger = pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" }).child({ replica: identity });
    const controller = await KubernetesController.start({
      kubeConfig: this.api.kubeConfig(),
      namespace: NAMESPACE,
      agentSelector: SELECTOR,
      leaseName: "shoal-controller",
      identity,
      listen: { host: "127.0.0.1", port: 0 },
      metrics,
      logger,
      grantStallTimeoutMs: 2_000,
      ...TIMINGS,
      // A few candidate periods: a follower takes a released Lease well within it.
      handoverTimeoutMs: 1_000,
      informerTuning: { initialBackoffMs: 100, maxBackoffMs: 1_000 },
      certificates: {
        caSecret: CA_SECRET,
        issuerListen: { host: "127.0.0.1", port: 0 },
        lifetimeMs: 3_600_000,
        tokenAudience: TOKEN_AUDIENCE,
        retryInitialMs: 100,
      },
      ...extra,
    });
    const metricsServer = await MetricsServer.start({
      host: "127.0.0.1",
      port: 0,
      registry: metrics.registry,
      health: { live: () => true, ready: () => controller.ready() },
    });
    const replica: Replica = {
      identity,
      controller,
      metrics,
      metricsServer,
      readyUrl: `http://127.0.0.1:${metricsServer.address.port}/readyz`,
      stopped: false,
    };
    this.replicas.set(identity, replica);
    for (const [podIp, routes] of this.podRoutes)
      routes.set(controller.trackerAddress, await this.forwarder.directEndpointFor(podIp, controller.trackerAddress));
    return replica;
  }

  /** Graceful (releases the Lease) or, with `release: false`, like a killed process. */
  async stopReplica(identity: string, options: { release?: boolean } = {}): Promise<void> {
    const replica = this.replicas.get(identity);
    if (replica === undefined || replica.stopped) return;
    replica.stopped = true;
    await replica.metricsServer.close();
    await replica.controller.stop({ releaseLease: options.release ?? true });
  }

  leaders(): Replica[] {
    return [...this.replicas.values()].filter((r) => !r.stopped && r.controller.leading);
  }

  /** A Node (with `labels`), and an agent Pod on it with `ip`. */
  addAgentPod(name: string, nodeName: string, ip: string, zone?: string, labels?: Readonly<Record<string, string>>): void {
    this.api.putNode({ name: nodeName, ...(zone === undefined ? {} : { zone }), ...(labels === undefined ? {} : { labels }) });
    this.api.putPod({ namespace: NAMESPACE, name, nodeName, ip, serviceAccount: AGENT_SERVICE_ACCOUNT });
  }

  /** The projected token the kubelet would mount in Pod `pod` (bound to it, for the controller's audience). */
  tokenFor(pod: string, audiences: readonly string[] = [TOKEN_AUDIENCE]): string {
    return this.api.serviceAccountToken({
      namespace: NAMESPACE,
      serviceAccount: AGENT_SERVICE_ACCOUNT,
      pod,
      audiences,
      expirationSeconds: 3600,
    });
  }

  /**
   * With `zoneFromTracker` the agent's scheduler uses the zone the tracker ranks it by, as in a cluster;
   * `token` replaces the Pod's own projected token.
   */
  async startAgent(
    name: string,
    nodeName: string,
    podIp: string,
    claimedZone?: string,
    options: { zoneFromTracker?: boolean; token?: string } = {},
  ): Promise<ClusterAgent> {
    const projected = options.token ?? this.tokenFor(name);
    const routes = new Map<string, string>();
    for (const replica of this.replicas.values())
      routes.set(replica.controller.trackerAddress, await this.forwarder.directEndpointFor(podIp, replica.controller.trackerAddress));
    this.podRoutes.set(podIp, routes);
    const agent = await ClusterAgent.start({
      issuerAddress: await this.issuerForwarder.endpointFor(podIp),
      token: () => Promise.resolve(projected),
      trustBundlePem: this.ca.certificatePem,
      name,
      nodeName,
      podIp,
      ...(claimedZone === undefined ? {} : { claimedZone }),
      trackerAddress: await this.forwarder.endpointFor(podIp),
      // A leader address the test has no route for is dialed as is, and then comes from 127.0.0.1: refused.
      dialLeader: (address) => routes.get(address) ?? address,
      origin: { host: this.origin.host, url: this.origin.url },
      tuning: { refreshIntervalMs: 100, announceIntervalMs: 50, stallMs: 1_000, relayWaitMs: 1_000 },
      ...(options.zoneFromTracker === true ? { zoneFromTracker: true } : {}),
    });
    this.agents.push(agent);
    return agent;
  }

  /** Stops one agent (its session ends); close() skips it. */
  async stopAgent(agent: ClusterAgent): Promise<void> {
    const index = this.agents.indexOf(agent);
    if (index >= 0) this.agents.splice(index, 1);
    await agent.stop();
  }

  async close(): Promise<void> {
    for (const agent of this.agents) await agent.stop();
    for (const identity of this.replicas.keys()) await this.stopReplica(identity);
    await this.forwarder.close();
    await this.issuerForwarder.close();
    await this.api.close();
    await this.origin.close();
  }
}
