// Messages between tracker-bench.ts and its load-worker processes (IPC).

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

export type WorkerCommand =
  | { readonly type: "connect"; readonly agents: readonly number[]; readonly port: number; readonly seed: number }
  | { readonly type: "rollout"; readonly plan: RolloutPlan }
  | { readonly type: "close" };

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
  | { readonly type: "closed" }
  | { readonly type: "failed"; readonly message: string };
