import { readFile } from "node:fs/promises";
import { hostname } from "node:os";
import type { Logger } from "pino";
import { CertificateManager, GrpcCertificateIssuer, type IdentitySource } from "../../pkg/identity/index.js";
import { AgentMetrics, MetricsServer } from "../../pkg/metrics/index.js";
import { AgentSwarm } from "../../pkg/peer/index.js";
import type { BlobFetcher, ClusterTags, ManifestPeers } from "../../pkg/registry/index.js";
import { GrpcTrackerClient } from "../../pkg/tracker/index.js";
import { Mirror, MirrorServer, OriginFetcher, UpstreamClient, loadDockerConfig } from "../../pkg/registry/index.js";
import { readConfigureReport } from "../../pkg/runtime/index.js";
import { DiskBlobStore, DiskTagStore } from "../../pkg/store/index.js";
import { VERSION } from "../shoal/version.js";
import { servedStore } from "./containerd.js";
import { openFileIdentity } from "../shoal/tls-options.js";
import { type AgentOptions, upstreamMap } from "./options.js";
import { startPrefetch } from "./prefetch.js";

/** The configure report is a small local file; a hung filesystem must not hold up the start. */
const REPORT_READ_TIMEOUT_MS = 5_000;
/** The token and the CA bundle are small local files (projected volumes). */
const IDENTITY_FILE_TIMEOUT_MS = 5_000;

export interface RunningAgent {
  readonly mirrorUrl: string;
  readonly metricsUrl: string;
  /** Graceful stop: refuse new requests, let running ones finish for up to `graceMs`, flush the store. */
  stop(graceMs: number): Promise<void>;
}

/** Wires an agent from validated options: store, upstream client, origin fetcher, mirror and metrics servers. */
export async function startAgent(options: AgentOptions, logger: Logger): Promise<RunningAgent> {
  const metrics = new AgentMetrics({ version: VERSION });
  const store = await DiskBlobStore.open({
    dir: options.dataDir,
    quotaBytes: options.storeQuota,
    highWatermark: options.storeHighWatermark,
    lowWatermark: options.storeLowWatermark,
    logger: logger.child({ component: "store" }),
  });
  const cleanups: (() => Promise<void>)[] = [() => store.close()];
  try {
    // Quota and store metrics count what the agent stores itself.
    metrics.bindStoreUsage(() => store.usage());
    store.subscribe((event) => {
      if (event.type === "removed") metrics.storeEvictions.inc({ reason: event.reason });
    });
    // Everything that reads blobs uses this one: the agent's store, then containerd's content store.
    const blobs = await servedStore(store, options, metrics, logger);
    cleanups.unshift(() => blobs.close());
    const tags = await DiskTagStore.open({ dir: options.dataDir, logger: logger.child({ component: "tags" }) });
    cleanups.unshift(() => tags.close());
    const credentials = options.registryCredentials === undefined ? undefined : await loadDockerConfig(options.registryCredentials);
    const upstreams = upstreamMap(options);
    const upstream = new UpstreamClient({
      upstreams,
      ...(credentials ? { credentials } : {}),
      connectTimeoutMs: options.upstreamConnectTimeout,
      bodyStallTimeoutMs: options.upstreamStallTimeout,
      userAgent: `shoal/${VERSION}`,
      logger: logger.child({ component: "upstream" }),
    });
    cleanups.unshift(() => upstream.close());
    const originFetcher = new OriginFetcher({ store: blobs, upstream, metrics, logger: logger.child({ component: "fetcher" }) });
    cleanups.unshift(() => originFetcher.close());
    let fetcher: BlobFetcher = originFetcher;
    let manifestPeers: ManifestPeers | undefined;
    let clusterTags: ClusterTags | undefined;
    let peerAddress: string | undefined;
    if (options.tracker !== undefined) {
      const trackerAddress = `${hostForUrl(options.tracker.host)}:${options.tracker.port}`;
      const tls = await agentIdentity(options, metrics, logger);
      if (tls !== undefined) cleanups.unshift(tls.close);
      else
        logger.warn(
          { tracker: trackerAddress },
          "plaintext peer and tracker gRPC: any local process can fetch pieces (local development only)",
        );
      const swarm = await AgentSwarm.start({
        store: blobs,
        origin: originFetcher,
        listen: options.peerAddr,
        advertise: options.peerAdvertiseAddr,
        nodeName: options.nodeName ?? hostname(),
        zone: options.zone,
        tracker: (identity) =>
          new GrpcTrackerClient({
            address: trackerAddress,
            identity,
            logger: logger.child({ component: "tracker-client" }),
            ...(tls === undefined ? {} : { tls: tls.source }),
            onConnectionChange: (connected) => {
              metrics.trackerConnected.set(connected ? 1 : 0);
            },
            onNotice: (kind) => {
              metrics.trackerNotices.inc({ kind });
            },
          }),
        uploadBytesPerSecond: options.uploadRate,
        maxConcurrentUploads: options.maxUploads,
        peerClient: { exchange: options.peerExchange },
        metrics,
        logger,
        tls: tls?.source,
      });
      cleanups.unshift(() => swarm.close());
      peerAddress = swarm.peerAddress;
      fetcher = swarm.fetcher;
      clusterTags = swarm.tracker;
      manifestPeers = swarm.manifestPeers;
      // ImagePrefetch: assignments over the tracker session, fetched through the swarm (cmd/agent/prefetch.ts).
      if (swarm.tracker instanceof GrpcTrackerClient)
        cleanups.unshift(startPrefetch({ channel: swarm.tracker, store: blobs, fetcher: swarm.fetcher, metrics, logger }));
    }
    const mirror = new Mirror({
      store: blobs,
      tags,
      upstream,
      fetcher,
      manifestPeers,
      clusterTags,
      metrics,
      logger: logger.child({ component: "mirror" }),
      defaultRegistry: options.defaultUpstream,
      responseStartTimeoutMs: options.responseStartTimeout,
      responseStallTimeoutMs: options.responseStallTimeout,
    });
    const mirrorServer = await MirrorServer.start({ ...options.mirrorAddr, mirror, logger: logger.child({ component: "mirror" }) });
    let stopping = false;
    const metricsServer = await MetricsServer.start({
      ...options.metricsAddr,
      registry: metrics.registry,
      health: { live: () => true, ready: () => (stopping ? "shutting down" : true) },
    });
    const mirrorUrl = `http://${hostForUrl(mirrorServer.address.address)}:${mirrorServer.address.port}`;
    const metricsUrl = `http://${hostForUrl(metricsServer.address.address)}:${metricsServer.address.port}`;
    logger.info(
      {
        mirror: mirrorUrl,
        metrics: metricsUrl,
        peer: peerAddress,
        tracker: options.tracker,
        dataDir: options.dataDir,
        registries: [...upstreams.keys()],
      },
      "agent started",
    );
    if (options.configureReport !== undefined)
      await reportRuntimeConfig(options.configureReport, metrics, logger.child({ component: "runtime-config" }));
    return {
      mirrorUrl,
      metricsUrl,
      async stop(graceMs: number) {
        stopping = true;
        await mirrorServer.close(graceMs);
        await metricsServer.close();
        for (const cleanup of cleanups) await cleanup();
        logger.info("agent stopped");
      },
    };
  } catch (error) {
    for (const cleanup of cleanups) await cleanup().catch(() => undefined);
    throw error;
  }
}

/**
 * This agent's certificate: issued by the controller for its ServiceAccount token and renewed in the
 * background (the swarm starts at once and uses peers once the first certificate is there), or read
 * from files; undefined for plaintext.
 */
async function agentIdentity(
  options: AgentOptions,
  metrics: AgentMetrics,
  logger: Logger,
): Promise<{ source: IdentitySource; close: () => Promise<void> } | undefined> {
  const { tlsCert, tlsKey, tlsCa, identityIssuer } = options;
  if (identityIssuer !== undefined && tlsCa !== undefined) {
    const read = (file: string) => () => readFile(file, { encoding: "utf8", signal: AbortSignal.timeout(IDENTITY_FILE_TIMEOUT_MS) });
    const manager = new CertificateManager({
      issuer: new GrpcCertificateIssuer({
        address: `${hostForUrl(identityIssuer.host)}:${identityIssuer.port}`,
        token: read(options.identityToken),
        trustBundle: read(tlsCa),
      }),
      role: "agent",
      requestName: options.nodeName ?? hostname(),
      logger: logger.child({ component: "certificate" }),
      onIssued: (material) => {
        metrics.identity.certificateObtained(material.notAfter);
      },
      onFailure: () => {
        metrics.identity.rotationFailures.inc();
      },
    });
    manager.start();
    return { source: manager, close: () => manager.close() };
  }
  if (tlsCert !== undefined && tlsKey !== undefined && tlsCa !== undefined) {
    const files = await openFileIdentity({ tlsCert, tlsKey, tlsCa }, metrics.identity, logger);
    return {
      source: files,
      close: () => {
        files.close();
        return Promise.resolve();
      },
    };
  }
  return undefined;
}

function hostForUrl(address: string): string {
  return address.includes(":") ? `[${address}]` : address;
}

/**
 * Surfaces what `shoal configure` found on this node: a log line per problem and
 * shoal_runtime_config_problems{code,severity}. A missing or unreadable report is itself logged.
 */
async function reportRuntimeConfig(file: string, metrics: AgentMetrics, logger: Logger): Promise<void> {
  let report;
  try {
    report = await readConfigureReport(file, AbortSignal.timeout(REPORT_READ_TIMEOUT_MS));
  } catch (error) {
    logger.warn({ err: error, file }, "no readable configure report: whether the container runtime pulls through this agent is unknown");
    return;
  }
  for (const problem of report.problems) {
    metrics.runtimeConfigProblems.inc({ code: problem.code, severity: problem.severity });
    const log =
      problem.severity === "error"
        ? logger.error.bind(logger)
        : problem.severity === "warning"
          ? logger.warn.bind(logger)
          : logger.info.bind(logger);
    log({ code: problem.code, file: problem.file, runtime: problem.runtime }, problem.message);
  }
  const effective = report.runtimes.filter((r) => r.mirrorEffective).map((r) => r.runtime);
  logger.info(
    { ok: report.ok, generatedAt: report.generatedAt, mirrorEffectiveFor: effective, problems: report.problems.length },
    "container runtime configuration",
  );
}
