export * from "./errors.js";
export * from "./tracker.js";
export * from "./membership.js";
export {
  MemoryTracker,
  DEFAULT_GRANT_STALL_TIMEOUT_MS,
  DEFAULT_MAX_LOOKUP_HOLDERS,
  type MemoryTrackerOptions,
  type RegisterOptions,
  type LookupAccess,
  type SessionCloseReason,
  type TrackerSession,
  type TrackerSnapshot,
  type TrackerEvent,
} from "./memory-tracker.js";
export { LocalTracker, type LocalTrackerOptions } from "./local-tracker.js";
export { TrackerServer, type TrackerServerOptions } from "./tracker-server.js";
export {
  GrpcTrackerClient,
  type GrpcTrackerClientOptions,
  DEFAULT_HEARTBEAT_INTERVAL_MS,
  DEFAULT_LOOKUP_TIMEOUT_MS,
} from "./grpc-tracker-client.js";
export * from "./prefetch.js";
export { announceRequest, announceRequests, heartbeatRequest, registerRequest } from "./wire.js";
export { LEADER_ADDRESS_METADATA, parseLeaderAddress, decideRedirect, type RedirectDecision } from "./leader-redirect.js";
