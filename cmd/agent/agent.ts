import type { Logger } from "pino";
import { AgentMetrics, MetricsServer } from "../../pkg/metrics/index.js";
import { Mirror, MirrorServer, OriginFetcher, UpstreamClient, loadDockerConfig } from "../../pkg/registry/index.js";
import { DiskBlobStore, DiskTagStore } from "../../pkg/store/index.js";
import { VERSION } from "../shoal/version.js";
import { type AgentOptions, upstreamMap } from "./options.js";

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
    metrics.bindStoreUsage(() => store.usage());
    store.subscribe((event) => {
      if (event.type === "removed") metrics.storeEvictions.inc({ reason: event.reason });
    });
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
    const fetcher = new OriginFetcher({ store, upstream, metrics, logger: logger.child({ component: "fetcher" }) });
    cleanups.unshift(() => fetcher.close());
    const mirror = new Mirror({
      store,
      tags,
      upstream,
      fetcher,
      metrics,
      logger: logger.child({ component: "mirror" }),
      defaultRegistry: options.defaultUpstream,
      responseStartTimeoutMs: options.responseStartTimeout,
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
    logger.info({ mirror: mirrorUrl, metrics: metricsUrl, dataDir: options.dataDir, registries: [...upstreams.keys()] }, "agent started");
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

function hostForUrl(address: string): string {
  return address.includes(":") ? `[${address}]` : address;
}
