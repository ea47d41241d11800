export { AgentSwarm, type AgentSwarmOptions } from "./agent-swarm.js";
export * from "./errors.js";
export { InventorySync } from "./inventory.js";
export { TrackerManifestPeers } from "./manifest-peers.js";
export { PeerClient, type PeerClientOptions } from "./peer-client.js";
export { PeerServer, type PeerServerOptions } from "./peer-server.js";
export type { PeerBlobStat, PieceReadRequest, PieceSource, ReceivedPiece } from "./piece-source.js";
export { KnownPeers, type KnownPeer } from "./known-peers.js";
export {
  SwarmFetcher,
  type SwarmFetcherOptions,
  GRANTEE_ANNOUNCE_WAIT_MS,
  GRANTEE_NOTICE_POLL_MS,
  GRANTEE_POLL_MS,
} from "./swarm-fetcher.js";
export { loopSleepMs, pollIntervalMs, refreshDue, type RefreshState, type RefreshTuning } from "./refresh-schedule.js";
export type { SwarmSelf } from "./swarm-round.js";
export { DEFAULT_SWARM_TUNING, type SwarmTuning } from "./swarm-tuning.js";
export { rendezvousSeed } from "./cross-zone-share.js";
export { MAX_PARKED_PIECES, PiecePicker, type PickerState } from "./piece-picker.js";
export { type PieceRequest, RequestBook } from "./request-book.js";
export { BUSY_BACKOFF_MS, isBusy, markBusy, rankPeers, type SwarmPeer, SwarmPeers } from "./swarm-peers.js";
