export { AgentSwarm, type AgentSwarmOptions } from "./agent-swarm.js";
export * from "./errors.js";
export { InventorySync } from "./inventory.js";
export { TrackerManifestPeers } from "./manifest-peers.js";
export { PeerClient, type PeerBlobStat, type PeerClientOptions } from "./peer-client.js";
export { PeerServer, type PeerServerOptions } from "./peer-server.js";
export type { PieceReadRequest, PieceSource, ReceivedPiece } from "./piece-source.js";
export { SwarmFetcher, type SwarmFetcherOptions } from "./swarm-fetcher.js";
export { DEFAULT_SWARM_TUNING, type SwarmSelf, type SwarmTuning } from "./swarm-download.js";
