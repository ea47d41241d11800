export * from "./errors.js";
export {
  AgentPrefetcher,
  type AgentPrefetcherOptions,
  type Seeder,
  DEFAULT_PREFETCH_CONCURRENCY,
  DEFAULT_REPORT_INTERVAL_MS,
} from "./agent-prefetcher.js";
