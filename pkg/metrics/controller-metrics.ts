import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { collectProcessMetrics } from "./process-metrics.js";
import { registerBuildInfo } from "./build-info.js";
import { IdentityMetrics } from "./identity-metrics.js";

/** Every metric the controller (tracker) exports. */
export class ControllerMetrics {
  readonly registry = new Registry();

  readonly agents = new Gauge({
    name: "shoal_tracker_agents",
    help: "Agents with a live session.",
    registers: [this.registry],
  });
  readonly blobs = new Gauge({
    name: "shoal_tracker_blobs",
    help: "Blobs announced by at least one agent.",
    registers: [this.registry],
  });
  readonly lookups = new Counter({
    name: "shoal_tracker_lookups_served_total",
    help: "Lookups answered, by result (holders, granted, none; retry: nothing granted while agents re-announce after a fail-over).",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });
  readonly noticesSent = new Counter({
    name: "shoal_tracker_notices_sent_total",
    help: "BlobChanged notices sent to agents watching a blob (another agent's announce changed it, or its grant was released).",
    registers: [this.registry],
  });
  readonly noticeDeltas = new Counter({
    name: "shoal_tracker_notice_deltas_total",
    help: "BlobChanged notices sent with the change (holders, new piece hashes, grantee), which spare the agent a lookup; the rest of shoal_tracker_notices_sent_total say only: look it up.",
    registers: [this.registry],
  });
  readonly noticesDropped = new Counter({
    name: "shoal_tracker_notices_dropped_total",
    help: "BlobChanged notices dropped because the agent's session stream was not draining (the agent's slow poll catches up).",
    registers: [this.registry],
  });
  readonly watches = new Gauge({
    name: "shoal_tracker_blob_watches",
    help: "(agent, blob) pairs the tracker sends notices for: blobs agents looked up lately and do not hold complete.",
    registers: [this.registry],
  });
  readonly announcePauses = new Counter({
    name: "shoal_tracker_announce_pauses_total",
    help: "Times a session was paused because announces over all sessions exceeded the tracker's rate (a re-announce storm after a fail-over).",
    registers: [this.registry],
  });
  readonly grants = new Counter({
    name: "shoal_tracker_origin_grants_total",
    help: "Origin fetches granted.",
    registers: [this.registry],
  });
  readonly grantMoves = new Counter({
    name: "shoal_tracker_origin_grant_moves_total",
    help: "Origin grants moved to another agent, by reason (disconnected, stalled).",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly sessionsRefused = new Counter({
    name: "shoal_tracker_sessions_refused_total",
    help: "Sessions refused because the agent is not a member.",
    registers: [this.registry],
  });
  readonly requestsRejected = new Counter({
    name: "shoal_tracker_requests_rejected_total",
    help: "Tracker requests rejected, by reason (invalid, conflict, excluded, not_registered, exhausted).",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly pieceHashConflicts = new Counter({
    name: "shoal_tracker_piece_hash_conflicts_total",
    help: "Announced piece hashes or sizes that contradict the announcer's claim or the other claims about the blob (kept apart).",
    registers: [this.registry],
  });
  readonly agentsExcluded = new Counter({
    name: "shoal_tracker_agents_excluded_total",
    help: "Agents excluded for a blob: they announced a complete copy that independent complete copies contradict.",
    registers: [this.registry],
  });

  // Kubernetes membership and leader election (--membership kubernetes).
  readonly leader = new Gauge({
    name: "shoal_controller_leader",
    help: "1 while this replica holds the leader Lease and serves the tracker, else 0.",
    registers: [this.registry],
  });
  readonly leadershipChanges = new Counter({
    name: "shoal_controller_leadership_changes_total",
    help: "Times this replica started or stopped leading, by change (acquired, lost).",
    labelNames: ["change"] as const,
    registers: [this.registry],
  });
  readonly handoverSeconds = new Histogram({
    name: "shoal_controller_handover_seconds",
    help: "On a graceful stop of the leader: from releasing the Lease until a follower holds it (the leader serves meanwhile).",
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5],
    registers: [this.registry],
  });
  readonly redirects = new Counter({
    name: "shoal_tracker_redirects_total",
    help: "Sessions and lookups refused by a replica that does not serve, naming the leader's tracker address (agents dial it directly).",
    registers: [this.registry],
  });
  readonly peersDropped = new Counter({
    name: "shoal_tracker_peers_dropped_total",
    help: "Agent sessions ended because their Pod went away, by reason (PodDeleted, PodTerminating, PodNotRunning, PodIPChanged).",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly informerRestarts = new Counter({
    name: "shoal_controller_informer_restarts_total",
    help: "List/watch restarts of the controller's informers, by resource and reason (gone: 410 relist, error, closed).",
    labelNames: ["resource", "reason"] as const,
    registers: [this.registry],
  });

  // ImagePrefetch (leader only; a follower reports zeros).
  readonly prefetchResources = new Gauge({
    name: "shoal_prefetch_resources",
    help: "ImagePrefetch resources this leader works on, by phase (Pending, Resolving, Seeding, Ready, Failed).",
    labelNames: ["phase"] as const,
    registers: [this.registry],
  });
  readonly prefetchSeeds = new Gauge({
    name: "shoal_prefetch_seeds",
    help: "Seeds of all ImagePrefetch resources, by state: target (wanted) and seeded (holding every manifest and blob).",
    labelNames: ["state"] as const,
    registers: [this.registry],
  });
  readonly prefetchReadySeconds = new Histogram({
    name: "shoal_prefetch_ready_seconds",
    help: "Time from an ImagePrefetch's start to Ready (every seed holds every image).",
    buckets: [1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600],
    registers: [this.registry],
  });
  /** The controller's certificate, its listeners' refused connections, and its certificate issuer. */
  readonly identity = new IdentityMetrics(this.registry, { listeners: ["tracker", "issuer"], issuer: true });

  constructor(options: { version: string; collectDefaults?: boolean }) {
    registerBuildInfo(this.registry, options.version);
    // Every series exists from the start (also without Kubernetes), so dashboards show 0, not "no data".
    for (const phase of ["Pending", "Resolving", "Seeding", "Ready", "Failed"]) this.prefetchResources.set({ phase }, 0);
    for (const state of ["seeded", "target"]) this.prefetchSeeds.set({ state }, 0);
    if (options.collectDefaults ?? true) collectProcessMetrics(this.registry);
  }
}
