import type { Logger } from "pino";
import type { AgentMetrics } from "../../pkg/metrics/index.js";
import { AgentPrefetcher } from "../../pkg/prefetch/index.js";
import { type BlobFetcher, ContentSeeder } from "../../pkg/registry/index.js";
import type { BlobStore } from "../../pkg/store/index.js";
import type { PrefetchChannel } from "../../pkg/tracker/index.js";

export interface PrefetchWiring {
  /** The tracker session the assignments come over (the agent's GrpcTrackerClient). */
  readonly channel: PrefetchChannel;
  readonly store: BlobStore;
  /** The fetcher pulls use (the swarm), so prefetched blobs come from peers before the origin. */
  readonly fetcher: BlobFetcher;
  readonly metrics: AgentMetrics;
  readonly logger: Logger;
}

/** Starts taking ImagePrefetch assignments; returns the stop function for the agent's shutdown. */
export function startPrefetch(wiring: PrefetchWiring): () => Promise<void> {
  const seeder = new ContentSeeder({ store: wiring.store, fetcher: wiring.fetcher, logger: wiring.logger.child({ component: "seeder" }) });
  const prefetcher = new AgentPrefetcher({
    channel: wiring.channel,
    seeder,
    metrics: wiring.metrics,
    logger: wiring.logger.child({ component: "prefetch" }),
  });
  prefetcher.start();
  return () => prefetcher.stop();
}
