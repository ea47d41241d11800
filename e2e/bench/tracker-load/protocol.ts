// Messages between tracker-bench.ts and its load-worker processes (IPC).

export interface BenchCa {
  readonly certificatePem: string;
  readonly keyPem: string;
}

export interface RolloutPlan {
  readonly durationMs: number;
  /** Share of the agents pulling the new image during the phase. */
  readonly activeFraction: number;
  /** Layers each pulling agent downloads at once (containerd's max_concurrent_downloads is 3). */
  readonly concurrentLayers: number;
  /** Per download: a lookup this often (the agent's refresh), a progress announce this often. */
  readonly lookupIntervalMs: number;
  readonly announceIntervalMs: number;
  /** Per agent. */
  readonly heartbeatIntervalMs: number;
}

/** The fail-over: lookups, then the leader is killed; agents reconnect and re-announce (storm.ts). */
export interface StormPlan {
  /** The tracker port the Service routes to at first (the leader's); "route" commands change it. */
  readonly port: number;
  /** All agents of the run (lookup targets are drawn from the others' inventories). */
  readonly agents: number;
  readonly seed: number;
  /** Per agent: one lookup this often (of a blob another agent holds, asking for the origin grant). */
  readonly lookupIntervalMs: number;
  /** Lookups before the kill (the baseline). */
  readonly baselineMs: number;
  /** The storm phase ends at the latest this long after the baseline. */
  readonly maxMs: number;
  /** Lookups go on this long after the last agent's re-announce is visible. */
  readonly tailMs: number;
  /** The agent's reconnect backoff (pkg/util's Backoff); its defaults (1 s doubling-ish to 10 s) where absent. */
  readonly backoff: { readonly initialDelayMs?: number; readonly maxDelayMs?: number };
  /** The agent's pacing options (reannounce-pacing.ts); its defaults where absent. */
  readonly pacing: { readonly spreadMs?: number; readonly batchBlobs?: number; readonly batchIntervalMs?: number };
}

export type WorkerCommand =
  /** `ca`: the cluster CA (PEM) when the tracker speaks mutual TLS: each agent gets a certificate from it. */
  | { readonly type: "connect"; readonly agents: readonly number[]; readonly port: number; readonly seed: number; readonly ca?: BenchCa }
  | { readonly type: "rollout"; readonly plan: RolloutPlan }
  | { readonly type: "storm"; readonly plan: StormPlan }
  /** The leader was killed at this Date.now(); no answer. */
  | { readonly type: "killed"; readonly atMs: number }
  /** Where the tracker Service routes now: the Ready replica's port, or none (no answer). */
  | { readonly type: "route"; readonly port: number | undefined }
  | { readonly type: "close" };

export interface StormReport {
  readonly type: "storm";
  readonly killedAtMs: number;
  /** Per agent (Date.now() ms; NaN when it never happened): registered again, re-announce written, visible at the tracker. */
  readonly registeredAtMs: readonly number[];
  readonly sentAtMs: readonly number[];
  readonly visibleAtMs: readonly number[];
  /** Session attempts (one per replica tried). */
  readonly attempts: number;
  /** Per answered lookup: when it was sent, its latency, and its result (0 holders, 1 origin granted, 2 retry, 3 none). */
  readonly lookupSentAtMs: readonly number[];
  readonly lookupLatencies: readonly number[];
  readonly lookupResults: readonly number[];
  /** Lookups that got no answer (no leader, refused by the follower, connection gone). */
  readonly lookupsUnavailable: number;
  readonly lookupsLate: number;
  readonly cpuSeconds: number;
}

export interface RolloutReport {
  readonly type: "result";
  readonly elapsedMs: number;
  readonly latencies: readonly number[];
  readonly lookups: number;
  readonly lookupErrors: number;
  /** Answered after the agent's 2 s lookup deadline: the agent would have gone to the origin. */
  readonly lateLookups: number;
  /** Not sent because the download's previous lookup was still unanswered. */
  readonly deferredLookups: number;
  readonly announces: number;
  /** Not sent because the session stream was backed up. */
  readonly skippedAnnounces: number;
  readonly heartbeats: number;
  readonly responseBytes: number;
  readonly checkedLookups: number;
  /** Holders in the checked (decoded) answers. */
  readonly holdersSeen: number;
  readonly downloads: number;
  /** The worker process's CPU since it started. */
  readonly cpuSeconds: number;
}

export type WorkerReport =
  | { readonly type: "connected"; readonly sessions: number }
  | RolloutReport
  | StormReport
  | { readonly type: "closed" }
  | { readonly type: "failed"; readonly message: string };
