/**
 * How long a tracker that starts empty keeps the origin closed while agents re-announce (a fail-over or a
 * restart). An agent that registers again after losing its session says how many blobs it is about to
 * re-announce (Register.resume_blobs); while any such session still has blobs to send, a lookup for a
 * blob nobody has announced yet may only be unknown *so far*, so the tracker grants no origin fetch and
 * answers "ask again shortly" (LookupResult.retryAfterMs) instead of sending the agent to the origin for a
 * blob its neighbours hold. A blob is held back for at most DEFAULT_REBUILD_HOLD_MS from the first lookup
 * of it: one that really is new (a rollout during the fail-over) is then granted to one agent as usual,
 * well before the agent's mirror gives up on the request (10 s) and containerd goes to the origin itself.
 */

/**
 * After the first session of an empty tracker, the grace lasts at least this long when agents are
 * resuming: the agents of the lost leader come back within their reconnect backoff (at most 10 s, ±20 %
 * jitter; pkg/util's Backoff), and one that has not registered yet has not said what it holds.
 */
export const DEFAULT_REBUILD_SETTLE_MS = 12_000;
/**
 * The grace ends this long after the first session whatever is still pending: a session that never
 * finishes its re-announce (it withdrew blobs meanwhile, or stalls) must not keep the origin closed.
 * Sessions resuming later than this (one agent reconnecting in steady state) open no grace either.
 */
export const DEFAULT_REBUILD_MAX_MS = 60_000;
/** What a lookup answered during the grace tells the agent to wait before asking again. */
export const REBUILD_RETRY_AFTER_MS = 1_000;
/** A blob is held back from the first lookup of it during the grace for at most this long. */
export const DEFAULT_REBUILD_HOLD_MS = 4_000;
/** Digests whose first lookup the grace remembers; past this, blobs are not held back (bounded memory). */
const MAX_HELD_DIGESTS = 100_000;

export interface RebuildGraceOptions {
  readonly settleMs?: number;
  readonly maxMs?: number;
  readonly holdMs?: number;
  readonly now: () => number;
}

/** The grace decision; owned by MemoryTracker and changed only from its (synchronous) methods. */
export class RebuildGrace {
  private readonly settleMs: number;
  private readonly maxMs: number;
  private readonly holdMs: number;
  private readonly now: () => number;
  /** When the tracker went from no session to one: it starts (again) from an empty state. */
  private startedAtMs: number | undefined;
  /** Whether a resuming session registered since then: a fresh cluster (nothing to re-announce) gets no grace. */
  private resumed = false;
  /** Agent id → announces it still owes (resume_blobs minus the announces received since it registered). */
  private readonly owed = new Map<string, number>();
  /** Digest → when it was first looked up during this grace. */
  private readonly firstAsked = new Map<string, number>();

  constructor(options: RebuildGraceOptions) {
    this.settleMs = options.settleMs ?? DEFAULT_REBUILD_SETTLE_MS;
    this.maxMs = options.maxMs ?? DEFAULT_REBUILD_MAX_MS;
    this.holdMs = options.holdMs ?? DEFAULT_REBUILD_HOLD_MS;
    this.now = options.now;
    if (!(this.settleMs >= 0 && this.maxMs >= this.settleMs))
      throw new RangeError(`rebuild grace: need 0 <= settle (${this.settleMs}) <= max (${this.maxMs})`);
    if (!(this.holdMs >= 0)) throw new RangeError(`rebuild grace: hold must be >= 0, got ${this.holdMs}`);
  }

  /** A session registered; `sessionsBefore` is how many other sessions the tracker holds. */
  registered(agentId: string, resumeBlobs: number, sessionsBefore: number): void {
    const now = this.now();
    if (sessionsBefore === 0) {
      this.startedAtMs = now;
      this.resumed = false;
      this.owed.clear();
      this.firstAsked.clear();
    }
    if (resumeBlobs <= 0 || this.startedAtMs === undefined || now - this.startedAtMs >= this.maxMs) return;
    this.resumed = true;
    this.owed.set(agentId, resumeBlobs);
  }

  /** One announce message from `agentId`. */
  announced(agentId: string): void {
    const left = this.owed.get(agentId);
    if (left === undefined) return;
    if (left <= 1) this.owed.delete(agentId);
    else this.owed.set(agentId, left - 1);
  }

  /** The session ended: what it still owed will not come. */
  dropped(agentId: string): void {
    this.owed.delete(agentId);
  }

  /** Sessions that still owe announces (for logs and tests). */
  get pendingSessions(): number {
    return this.owed.size;
  }

  /**
   * For a lookup of `digest` that found no complete holder: REBUILD_RETRY_AFTER_MS while the grace holds
   * and the blob has not been held back for DEFAULT_REBUILD_HOLD_MS yet, else 0 (grant as usual).
   */
  retryAfterMs(digest: string): number {
    if (!this.resumed || this.startedAtMs === undefined) return 0;
    const now = this.now();
    const elapsed = now - this.startedAtMs;
    if (elapsed >= this.maxMs) {
      this.resumed = false;
      this.owed.clear();
      this.firstAsked.clear();
      return 0;
    }
    if (this.owed.size === 0 && elapsed >= this.settleMs) return 0;
    let first = this.firstAsked.get(digest);
    if (first === undefined) {
      if (this.firstAsked.size >= MAX_HELD_DIGESTS) return 0;
      first = now;
      this.firstAsked.set(digest, now);
    }
    return now - first < this.holdMs ? REBUILD_RETRY_AFTER_MS : 0;
  }
}
