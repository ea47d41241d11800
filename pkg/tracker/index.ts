export * from "./errors.js";
export * from "./tracker.js";
export * from "./membership.js";
export { MemoryTracker, DEFAULT_MAX_LOOKUP_HOLDERS, type MemoryTrackerOptions, type TrackerSnapshot } from "./memory-tracker.js";
export { DEFAULT_GRANT_STALL_TIMEOUT_MS } from "./origin-grants.js";
export type { RegisterOptions, SessionCloseReason, TrackerSession } from "./tracker-session.js";
export type { LookupAccess } from "./session-access.js";
export type { TrackerEvent } from "./tracker-events.js";
export { rankKey } from "./holder-ranking.js";
export { LocalTracker, type LocalTrackerOptions } from "./local-tracker.js";
export {
  BlobWatchers,
  type BlobWatchersOptions,
  type Scheduler,
  DEFAULT_NOTICE_INTERVAL_MS,
  DEFAULT_NOTICES_PER_BLOB_PER_SECOND,
  MAX_WATCHES_PER_AGENT,
  WATCH_TTL_MS,
} from "./blob-watchers.js";
export { TrackerServer, type TrackerServerOptions } from "./tracker-server.js";
export { AnnounceGate, type AnnounceGateOptions, DEFAULT_ANNOUNCES_PER_SECOND, DEFAULT_ANNOUNCE_BURST } from "./announce-gate.js";
export {
  ReannouncePacing,
  type ReannouncePacingOptions,
  type ReannounceStep,
  Reannouncer,
  DEFAULT_REANNOUNCE_SPREAD_MS,
  DEFAULT_REANNOUNCE_BATCH_BLOBS,
  DEFAULT_REANNOUNCE_BATCH_INTERVAL_MS,
  MAX_REANNOUNCE_SPREAD_MS,
  spreadForSessions,
} from "./reannounce-pacing.js";
export { DEFAULT_REBUILD_HOLD_MS, DEFAULT_REBUILD_MAX_MS, DEFAULT_REBUILD_SETTLE_MS, REBUILD_RETRY_AFTER_MS } from "./rebuild-grace.js";
export { GrpcTrackerClient, type GrpcTrackerClientOptions, DEFAULT_HEARTBEAT_INTERVAL_MS } from "./grpc-tracker-client.js";
export { DEFAULT_LOOKUP_TIMEOUT_MS } from "./tracker-connection.js";
export * from "./prefetch.js";
export { announceRequest, announceRequests, heartbeatRequest, registerRequest } from "./wire.js";
export { LEADER_ADDRESS_METADATA, parseLeaderAddress, decideRedirect, type RedirectDecision } from "./leader-redirect.js";
