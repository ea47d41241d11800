import type { Logger } from "pino";
import { ControllerMetrics, MetricsServer } from "../../pkg/metrics/index.js";
import { type Membership, MemoryTracker, OpenMembership, StaticMembership, TrackerServer } from "../../pkg/tracker/index.js";
import { VERSION } from "../shoal/version.js";
import { openFileIdentity } from "../shoal/tls-options.js";
import type { KubernetesSettings } from "./kubernetes-settings.js";
import { type ControllerOptions, DEFAULT_CANDIDATE_PERIOD_MS, prefetchUpstreams } from "./options.js";

export interface RunningController {
  /** host:port agents dial (the bound port). */
  readonly trackerAddress: string;
  readonly metricsUrl: string;
  /** Graceful stop: not ready, end agent sessions (they reconnect to the next leader), close servers. */
  stop(): Promise<void>;
}

/**
 * Wires a controller from validated options: tracker state, its gRPC server, membership and metrics.
 * With --membership kubernetes, `kubernetes` (resolveKubernetesSettings) gives the API connection.
 */
export async function startController(
  options: ControllerOptions,
  logger: Logger,
  kubernetes?: KubernetesSettings,
): Promise<RunningController> {
  const metrics = new ControllerMetrics({ version: VERSION });
  if (options.membership === "kubernetes") {
    if (kubernetes === undefined) throw new Error("--membership kubernetes needs the Kubernetes settings");
    return await startKubernetesController(options, logger, metrics, kubernetes);
  }
  const tracker = new MemoryTracker({
    logger: logger.child({ component: "tracker" }),
    metrics,
    grantStallTimeoutMs: options.grantStallTimeout,
  });
  const membership: Membership = options.membership === "static" ? new StaticMembership(options.allowedPeers ?? []) : new OpenMembership();
  const { tlsCert, tlsKey, tlsCa } = options;
  const tls =
    tlsCert === undefined || tlsKey === undefined || tlsCa === undefined
      ? undefined
      : await openFileIdentity({ tlsCert, tlsKey, tlsCa }, metrics.identity, logger);
  if (tls === undefined)
    logger.warn({ listen: options.listen }, "plaintext tracker: any process that reaches it can register (local development only)");
  let server: TrackerServer;
  try {
    server = await TrackerServer.start({
      ...options.listen,
      tracker,
      membership,
      metrics,
      logger: logger.child({ component: "tracker-server" }),
      ...(tls === undefined ? {} : { tls }),
    });
  } catch (error) {
    tls?.close();
    throw error;
  }
  let stopping = false;
  let metricsServer: MetricsServer;
  try {
    metricsServer = await MetricsServer.start({
      ...options.metricsAddr,
      registry: metrics.registry,
      health: { live: () => true, ready: () => (stopping ? "shutting down" : true) },
    });
  } catch (error) {
    await server.close();
    tls?.close();
    throw error;
  }
  const metricsAddress = metricsServer.address;
  const metricsHost = metricsAddress.family === "IPv6" ? `[${metricsAddress.address}]` : metricsAddress.address;
  const metricsUrl = `http://${metricsHost}:${metricsAddress.port}`;
  logger.info(
    {
      tracker: server.address,
      metrics: metricsUrl,
      membership: options.membership,
      tls: tls !== undefined,
      trackerId: tracker.id,
      grantStallTimeoutMs: options.grantStallTimeout,
    },
    "controller started",
  );
  return {
    trackerAddress: server.address,
    metricsUrl,
    async stop() {
      stopping = true;
      await server.close();
      tls?.close();
      await metricsServer.close();
      logger.info("controller stopped");
    },
  };
}

/** --membership kubernetes: informers, Lease election and Events; every synced replica is Ready, only the leader serves. */
async function startKubernetesController(
  options: ControllerOptions,
  logger: Logger,
  metrics: ControllerMetrics,
  settings: KubernetesSettings,
): Promise<RunningController> {
  const { KubernetesController } = await import("../../pkg/controller/index.js");
  const controller = await KubernetesController.start({
    kubeConfig: settings.kubeConfig,
    namespace: settings.namespace,
    identity: settings.identity,
    agentSelector: options.agentSelector,
    leaseName: options.leaseName,
    leaseDurationMs: options.leaseDuration,
    renewDeadlineMs: options.renewDeadline,
    retryPeriodMs: options.retryPeriod,
    candidatePeriodMs: options.candidatePeriod ?? Math.min(DEFAULT_CANDIDATE_PERIOD_MS, options.retryPeriod),
    ...(options.advertiseHost === undefined ? {} : { advertiseHost: options.advertiseHost }),
    listen: options.listen,
    grantStallTimeoutMs: options.grantStallTimeout,
    metrics,
    logger,
    ...(options.prefetch ? { prefetch: { upstreams: prefetchUpstreams(options), userAgent: `shoal-controller/${VERSION}` } } : {}),
    certificates: {
      caSecret: options.caSecret,
      issuerListen: options.issuerListen,
      lifetimeMs: options.certLifetime,
      tokenAudience: options.tokenAudience,
    },
  });
  let metricsServer: MetricsServer;
  try {
    metricsServer = await MetricsServer.start({
      ...options.metricsAddr,
      registry: metrics.registry,
      health: { live: () => true, ready: () => controller.ready() },
    });
  } catch (error) {
    await controller.stop();
    throw error;
  }
  const metricsAddress = metricsServer.address;
  const metricsHost = metricsAddress.family === "IPv6" ? `[${metricsAddress.address}]` : metricsAddress.address;
  const metricsUrl = `http://${metricsHost}:${metricsAddress.port}`;
  logger.info(
    {
      tracker: controller.trackerAddress,
      issuer: controller.issuerAddress,
      metrics: metricsUrl,
      membership: "kubernetes",
      namespace: settings.namespace,
      identity: settings.identity,
      lease: options.leaseName,
      agentSelector: options.agentSelector,
    },
    "controller started",
  );
  return {
    trackerAddress: controller.trackerAddress,
    metricsUrl,
    async stop() {
      // Sessions end and the Lease is released first, so a follower serves while this one finishes.
      await controller.stop();
      await metricsServer.close();
      logger.info("controller stopped");
    },
  };
}
