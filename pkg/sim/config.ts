import { DEFAULT_SWARM_TUNING, type SwarmTuning } from "../peer/index.js";
import { choosePieceSize } from "../piece/index.js";
import { DEFAULT_MAX_LOOKUP_HOLDERS, DEFAULT_NOTICE_INTERVAL_MS, DEFAULT_NOTICES_PER_BLOB_PER_SECOND } from "../tracker/index.js";
import { SimError } from "./errors.js";

/** The agent's default --max-uploads: concurrent piece streams a node serves; more are refused as busy. */
export const DEFAULT_MAX_UPLOADS = 16;
/** The agent's tracker heartbeat (the load signal the tracker ranks holders by). */
export const HEARTBEAT_INTERVAL_MS = 5_000;
/** How long a non-grantee waits for the grantee's first announce, and how often it asks (SwarmFetcher). */
export { GRANTEE_ANNOUNCE_WAIT_MS, GRANTEE_NOTICE_POLL_MS, GRANTEE_POLL_MS } from "../peer/index.js";
/** The tracker's default: a grantee that announces nothing new for this long loses the grant. */
export const GRANT_STALL_TIMEOUT_MS = 10_000;

/** One node's link. Rates in bytes per second; Infinity = uncapped. */
export interface NodeLink {
  readonly uploadBytesPerSecond: number;
  readonly downloadBytesPerSecond: number;
  /** topology.kubernetes.io/zone; "" = zones not in play. */
  readonly zone: string;
}

export interface SimConfig {
  /** The blob every node pulls at t = 0 (one layer: the swarm's unit of work). */
  readonly blobBytes: number;
  /** Piece size; the agent's own rule (choosePieceSize) by default. */
  readonly pieceBytes: number;
  readonly nodes: readonly NodeLink[];
  /** u_s, bytes per second (finite: the origin is what is shared). */
  readonly originBytesPerSecond: number;
  /** One-way latency between two nodes of one zone, of different zones, and from the origin (ms). */
  readonly latencyMs: number;
  readonly crossZoneLatencyMs: number;
  readonly originLatencyMs: number;
  /** The scheduler's knobs (the agent's defaults unless changed). */
  readonly tuning: SwarmTuning;
  readonly maxUploads: number;
  /** Holders per tracker answer (the tracker's default unless changed). */
  readonly maxLookupHolders: number;
  /**
   * The tracker sends BlobChanged notices and the agents take them (today's agent and tracker); false: the
   * agents poll as before notices. A notice reaches its agent `latencyMs` after the announce that caused it.
   */
  readonly notices: boolean;
  /**
   * The notices carry the change (holders, new hashes, grantee) and the agents apply it instead of looking
   * the blob up (today's agent and tracker); false: every notice says "look it up", as before deltas.
   */
  readonly noticeDeltas: boolean;
  /** The tracker's coalescing interval: one round of notices per blob per this many ms. */
  readonly noticeIntervalMs: number;
  /** The tracker's cap on one blob's notices per second over all watchers (Infinity: the interval alone). */
  readonly noticesPerBlobPerSecond: number;
  /** Simulation step: rates are recomputed and agents react at this granularity (ms). */
  readonly tickMs: number;
  /** Agents plan at least this often even when nothing happened (hedging and back-off expiry) (ms). */
  readonly idlePlanMs: number;
  /** Give up (and report the nodes as incomplete) after this much simulated time (ms). */
  readonly timeLimitMs: number;
  readonly seed: number;
}

export interface UniformSwarm {
  readonly nodes: number;
  readonly blobBytes: number;
  readonly nodeBytesPerSecond: number;
  /** Download rate when it differs from the upload rate. */
  readonly downloadBytesPerSecond?: number;
  readonly originBytesPerSecond: number;
  /** Zones the nodes are spread over round-robin; 1 = zones not in play (the agent's default). */
  readonly zones?: number;
}

/** A configuration for N identical nodes, with the agent's defaults for everything not given. */
export function uniformSwarm(swarm: UniformSwarm, overrides: Partial<SimConfig> = {}): SimConfig {
  const zones = swarm.zones ?? 1;
  const nodes = Array.from({ length: swarm.nodes }, (_, i): NodeLink => ({
    uploadBytesPerSecond: swarm.nodeBytesPerSecond,
    downloadBytesPerSecond: swarm.downloadBytesPerSecond ?? swarm.nodeBytesPerSecond,
    zone: zones <= 1 ? "" : `zone-${i % zones}`,
  }));
  return validateConfig({
    blobBytes: swarm.blobBytes,
    pieceBytes: choosePieceSize(swarm.blobBytes),
    nodes,
    originBytesPerSecond: swarm.originBytesPerSecond,
    latencyMs: 0.25,
    crossZoneLatencyMs: 1,
    originLatencyMs: 10,
    tuning: DEFAULT_SWARM_TUNING,
    maxUploads: DEFAULT_MAX_UPLOADS,
    maxLookupHolders: DEFAULT_MAX_LOOKUP_HOLDERS,
    notices: true,
    noticeDeltas: true,
    noticeIntervalMs: DEFAULT_NOTICE_INTERVAL_MS,
    noticesPerBlobPerSecond: DEFAULT_NOTICES_PER_BLOB_PER_SECOND,
    tickMs: 5,
    idlePlanMs: 250,
    timeLimitMs: 3_600_000,
    seed: 1,
    ...overrides,
  });
}

/** Throws ERR_SIM_INVALID_CONFIG naming the first setting out of range. */
export function validateConfig(config: SimConfig): SimConfig {
  const positive = (name: string, value: number, finite = true): void => {
    if (!(value > 0) || (finite && !Number.isFinite(value)))
      throw new SimError("ERR_SIM_INVALID_CONFIG", `${name} must be a positive${finite ? " finite" : ""} number, got ${value}`);
  };
  positive("blobBytes", config.blobBytes);
  positive("pieceBytes", config.pieceBytes);
  positive("originBytesPerSecond", config.originBytesPerSecond);
  positive("tickMs", config.tickMs);
  positive("idlePlanMs", config.idlePlanMs);
  positive("timeLimitMs", config.timeLimitMs);
  positive("maxUploads", config.maxUploads);
  positive("maxLookupHolders", config.maxLookupHolders);
  positive("noticeIntervalMs", config.noticeIntervalMs);
  positive("noticesPerBlobPerSecond", config.noticesPerBlobPerSecond, false);
  if (config.nodes.length < 1 || config.nodes.length > 100_000)
    throw new SimError("ERR_SIM_INVALID_CONFIG", `nodes must be 1..100000, got ${config.nodes.length}`);
  if (Math.ceil(config.blobBytes / config.pieceBytes) > 65_536)
    throw new SimError("ERR_SIM_INVALID_CONFIG", "blobBytes / pieceBytes must give at most 65536 pieces");
  for (const [name, value] of [
    ["latencyMs", config.latencyMs],
    ["crossZoneLatencyMs", config.crossZoneLatencyMs],
    ["originLatencyMs", config.originLatencyMs],
  ] as const) {
    if (!(value >= 0) || !Number.isFinite(value))
      throw new SimError("ERR_SIM_INVALID_CONFIG", `${name} must be a finite number ≥ 0, got ${value}`);
  }
  config.nodes.forEach((node, i) => {
    positive(`nodes[${i}].uploadBytesPerSecond`, node.uploadBytesPerSecond, false);
    positive(`nodes[${i}].downloadBytesPerSecond`, node.downloadBytesPerSecond);
  });
  return config;
}
