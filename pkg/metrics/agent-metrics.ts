import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { collectProcessMetrics } from "./process-metrics.js";
import { registerBuildInfo } from "./build-info.js";
import { ContainerdMetrics } from "./containerd-metrics.js";
import { IdentityMetrics } from "./identity-metrics.js";

/** Where the bytes handed to a client came from. */
export type ServeSource = "local" | "peer" | "origin";
export type RequestKind = "base" | "manifest" | "blob";

/** Label value for an agent whose zone is not set (`--zone` empty). */
export const UNKNOWN_ZONE_LABEL = "unknown";
/**
 * Distinct source zones counted under their own name; later ones are counted as "other". Zones come from
 * other agents' registrations: a cap keeps a misconfigured cluster from growing series without bound.
 */
export const MAX_ZONE_LABEL_VALUES = 32;
export const OTHER_ZONE_LABEL = "other";

/** Latency buckets in seconds: sub-millisecond cache hits up to multi-minute cold pulls of large layers. */
const LATENCY_BUCKETS_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export interface StoreUsageSnapshot {
  readonly usedBytes: number;
  readonly quotaBytes: number;
  readonly blobs: number;
  readonly partials: number;
}

export interface AgentMetricsOptions {
  readonly version: string;
  /** Process-level metrics (CPU, RSS, event loop lag); off in tests that create many registries. */
  readonly collectDefaults?: boolean;
}

/** Every metric the agent exports. Label values are bounded sets: no digests, names or addresses. */
export class AgentMetrics {
  readonly registry = new Registry();

  readonly blobBytesServed = new Counter({
    name: "shoal_blob_bytes_served_total",
    help: "Bytes of blobs and manifests handed to clients, by where they came from. Origin offload = 1 - origin/all.",
    labelNames: ["source"] as const,
    registers: [this.registry],
  });
  readonly originBytesFetched = new Counter({
    name: "shoal_origin_bytes_fetched_total",
    help: "Bytes received from upstream registries (bodies of blobs and manifests).",
    registers: [this.registry],
  });
  readonly requests = new Counter({
    name: "shoal_requests_total",
    help: "Mirror requests answered, by kind, source and HTTP status code.",
    labelNames: ["kind", "source", "code"] as const,
    registers: [this.registry],
  });
  readonly requestDuration = new Histogram({
    name: "shoal_request_duration_seconds",
    help: "Time from request to the last byte of the response, by kind and source.",
    labelNames: ["kind", "source"] as const,
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [this.registry],
  });
  readonly timeToFirstByte = new Histogram({
    name: "shoal_time_to_first_byte_seconds",
    help: "Time from request to response headers, by kind and source.",
    labelNames: ["kind", "source"] as const,
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [this.registry],
  });
  readonly upstreamErrors = new Counter({
    name: "shoal_upstream_errors_total",
    help: "Failed upstream requests, by reason (timeout, network, status, truncated, digest_mismatch, auth).",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly upstreamRetries = new Counter({
    name: "shoal_upstream_resumes_total",
    help: "Upstream blob transfers resumed with a Range request after a failure mid-stream.",
    registers: [this.registry],
  });
  readonly digestMismatches = new Counter({
    name: "shoal_digest_mismatches_total",
    help: "Content discarded because it did not match its digest, by source.",
    labelNames: ["source"] as const,
    registers: [this.registry],
  });
  readonly runtimeConfigProblems = new Gauge({
    name: "shoal_runtime_config_problems",
    help: "Problems `shoal configure` found in the node's container runtime configuration (from its report), by code and severity; error means pulls do not go through this agent.",
    labelNames: ["code", "severity"] as const,
    registers: [this.registry],
  });
  readonly tagFallbacks = new Counter({
    name: "shoal_tag_fallbacks_total",
    help: "Pulls by tag answered with the last digest seen because the upstream could not be reached.",
    registers: [this.registry],
  });
  readonly fallbackResponses = new Counter({
    name: "shoal_fallback_responses_total",
    help: "Requests answered 404 before any byte so that the container runtime falls back to the upstream, by reason.",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly inflightFetches = new Gauge({
    name: "shoal_inflight_fetches",
    help: "Blob fetches in progress (shared by all requests for the same digest).",
    registers: [this.registry],
  });
  readonly storeEvictions = new Counter({
    name: "shoal_store_evictions_total",
    help: "Blobs removed from the store, by reason (evicted, deleted, corrupt).",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });

  readonly peerBytesSent = new Counter({
    name: "shoal_peer_bytes_sent_total",
    help: "Piece bytes sent to other agents.",
    registers: [this.registry],
  });
  readonly peerBytesReceived = new Counter({
    name: "shoal_peer_bytes_received_total",
    help: "Piece bytes received from other agents (before verification).",
    registers: [this.registry],
  });
  readonly peerBytesReceivedByZone = new Counter({
    name: "shoal_peer_bytes_received_by_zone_total",
    help:
      "Piece bytes of blobs received from other agents by the swarm, by the sender's zone (source_zone) and this agent's zone (zone); " +
      `"${UNKNOWN_ZONE_LABEL}" where a zone is not set. Series with source_zone != zone are cross-zone traffic.`,
    labelNames: ["source_zone", "zone"] as const,
    registers: [this.registry],
  });
  readonly receiveBudgetBytes = new Gauge({
    name: "shoal_swarm_receive_budget_bytes",
    help: "Piece bytes this agent may have asked its peers for at once: its receive rate times the target wait (ReceiveBudget).",
    registers: [this.registry],
  });
  readonly requestedPieceBytes = new Gauge({
    name: "shoal_swarm_requested_bytes",
    help: "Piece bytes this agent has asked its peers for and not received yet, all downloads together.",
    registers: [this.registry],
  });
  readonly peerUploadsActive = new Gauge({
    name: "shoal_peer_uploads_active",
    help: "Piece streams this agent is serving now.",
    registers: [this.registry],
  });
  readonly peerUploadsRejected = new Counter({
    name: "shoal_peer_uploads_rejected_total",
    help: "Piece requests refused because the upload cap (concurrent streams) was full.",
    registers: [this.registry],
  });
  readonly peerBytesWasted = new Counter({
    name: "shoal_peer_bytes_wasted_total",
    help:
      "Piece bytes received from other agents and not kept, by reason: already_held (a duplicate of a hedged, endgame or raced request), " +
      "unverifiable (arrived before its hash and could not be parked), bad (failed verification), incomplete (a piece cut off mid-call).",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly pieceVerificationFailures = new Counter({
    name: "shoal_piece_verification_failures_total",
    help: "Pieces from peers that did not match their SHA-256 (the peer is dropped for that blob).",
    registers: [this.registry],
  });
  readonly peerErrors = new Counter({
    name: "shoal_peer_errors_total",
    help: "Failed piece transfers from peers, by reason (unavailable, busy, missing_piece, timeout, protocol, bad_piece).",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly trackerLookups = new Counter({
    name: "shoal_tracker_lookups_total",
    help:
      "Tracker lookups by this agent, by result (holders, granted, none, unavailable; retry: the tracker is rebuilding after a fail-over and asked to wait); while the tracker is unreachable, " +
      "lookups answered by the peers this agent knows (peers) or by none of them (peers_none).",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  readonly trackerNotices = new Counter({
    name: "shoal_tracker_notices_received_total",
    help:
      "BlobChanged notices from the tracker, by kind: delta (it carried the change, no lookup needed), lookup (it said only: look it up), " +
      "malformed (a change that does not fit its blob, or a bad digest: looked up instead, or dropped).",
    labelNames: ["kind"] as const,
    registers: [this.registry],
  });
  readonly trackerConnected = new Gauge({
    name: "shoal_tracker_connected",
    help: "1 while the agent's session with the tracker is up.",
    registers: [this.registry],
  });
  readonly peersKnown = new Gauge({
    name: "shoal_peers_known",
    help: "Distinct peers named by the last tracker lookups.",
    registers: [this.registry],
  });
  readonly swarmStalls = new Counter({
    name: "shoal_swarm_stalls_total",
    help:
      "Swarm download rounds that ended before the blob was whole, by reason: silent (no byte or piece from any peer for the stall time, " +
      "not counting time this agent itself did not run), orphaned (no grantee and no peer holding a missing piece). Each is followed by a lookup " +
      "and the next round, or the origin.",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly swarmDownloadDuration = new Histogram({
    name: "shoal_swarm_download_duration_seconds",
    help: "Time to complete a blob this agent lacked, by where most of its bytes came from.",
    labelNames: ["source"] as const,
    buckets: LATENCY_BUCKETS_SECONDS,
    registers: [this.registry],
  });

  readonly prefetchBytes = new Counter({
    name: "shoal_prefetch_bytes_total",
    help: "Bytes of blobs put in the store for prefetch assignments (ImagePrefetch seeds), by where they came from (origin, peer; local = already held).",
    labelNames: ["source"] as const,
    registers: [this.registry],
  });
  readonly prefetchAssignments = new Counter({
    name: "shoal_prefetch_assignments_total",
    help: "Prefetch assignments this agent finished, by result (done, failed, cancelled).",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });

  /** containerd's content store as a blob source (off on CRI-O nodes: then all zero). */
  readonly containerd = new ContainerdMetrics(this.registry);
  /** This agent's certificate and the peer port's refused connections. */
  readonly identity = new IdentityMetrics(this.registry, { listeners: ["peer"] });

  private storeUsage: (() => StoreUsageSnapshot) | undefined;
  private readonly sourceZones = new Set<string>();

  constructor(options: AgentMetricsOptions) {
    registerBuildInfo(this.registry, options.version);
    // Every series exists from the start, so dashboards show 0 instead of "no data" before the first prefetch.
    for (const source of ["origin", "peer", "local"]) this.prefetchBytes.inc({ source }, 0);
    for (const result of ["done", "failed", "cancelled"]) this.prefetchAssignments.inc({ result }, 0);
    const usage = (): StoreUsageSnapshot | undefined => this.storeUsage?.();
    new Gauge({
      name: "shoal_store_used_bytes",
      help: "Bytes held by the blob store (complete blobs and reserved partial blobs).",
      registers: [this.registry],
      collect() {
        const u = usage();
        if (u) this.set(u.usedBytes);
      },
    });
    new Gauge({
      name: "shoal_store_quota_bytes",
      help: "Configured size quota of the blob store; 0 means unlimited.",
      registers: [this.registry],
      collect() {
        const u = usage();
        if (u) this.set(u.quotaBytes);
      },
    });
    new Gauge({
      name: "shoal_store_blobs",
      help: "Blobs in the store, by state.",
      labelNames: ["state"] as const,
      registers: [this.registry],
      collect() {
        const u = usage();
        if (!u) return;
        this.set({ state: "complete" }, u.blobs);
        this.set({ state: "partial" }, u.partials);
      },
    });
    if (options.collectDefaults ?? true) collectProcessMetrics(this.registry);
    // Pre-create the central series so dashboards show 0 instead of "no data" before the first pull.
    for (const source of ["local", "peer", "origin"] as const) this.blobBytesServed.inc({ source }, 0);
  }

  /** Counts `bytes` of pieces received from an agent in `sourceZone` by this agent in `zone` ("" = not set). */
  countPeerBytesByZone(sourceZone: string, zone: string, bytes: number): void {
    this.peerBytesReceivedByZone.inc({ source_zone: this.sourceZoneLabel(sourceZone), zone: zoneLabel(zone) }, bytes);
  }

  /** Binds the store gauges to a live usage source; read at scrape time. */
  bindStoreUsage(read: () => StoreUsageSnapshot): void {
    this.storeUsage = read;
  }

  private sourceZoneLabel(zone: string): string {
    const label = zoneLabel(zone);
    if (this.sourceZones.has(label)) return label;
    if (this.sourceZones.size >= MAX_ZONE_LABEL_VALUES) return OTHER_ZONE_LABEL;
    this.sourceZones.add(label);
    return label;
  }
}

/** The label value of a zone: the zone itself, or UNKNOWN_ZONE_LABEL when it is not set. */
export function zoneLabel(zone: string): string {
  return zone === "" ? UNKNOWN_ZONE_LABEL : zone;
}
