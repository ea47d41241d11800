/** The longest a new leader holds origin grants back; below the agents' wait for a grantee to announce (3 s). */
export const GRANT_HOLDOFF_MAX_MS = 1_500;
/** After the last expected agent registered: time for its re-announced inventory to arrive. */
export const GRANT_HOLDOFF_SETTLE_MS = 200;

export interface GrantHoldoffOptions {
  /** Agents expected to re-register (agent Pods that may hold a session). */
  readonly expectedAgents: () => number;
  /** Sessions registered with this tracker now. */
  readonly registeredAgents: () => number;
  readonly maxMs?: number;
  readonly settleMs?: number;
  readonly now?: () => number;
}

/**
 * A new leader starts with an empty tracker: until the agents have re-registered and re-announced, a
 * lookup for a blob that some agent already holds (or is fetching under the previous leader's grant)
 * finds no holder and would be granted the origin, a second copy from the origin. So for a short while
 * after taking over, lookups get no grant; the asking agent waits for a holder as it does for a grantee
 * that has not announced yet. The hold ends when every expected agent has a session (plus a moment for
 * its inventory to arrive) or after maxMs, whichever comes first.
 */
export class GrantHoldoff {
  private readonly now: () => number;
  private readonly maxMs: number;
  private readonly settleMs: number;
  private holdUntilMs = 0;
  private expected = 0;
  private settling = false;

  constructor(private readonly options: GrantHoldoffOptions) {
    this.now = options.now ?? (() => performance.now());
    this.maxMs = options.maxMs ?? GRANT_HOLDOFF_MAX_MS;
    this.settleMs = options.settleMs ?? GRANT_HOLDOFF_SETTLE_MS;
  }

  /** Leadership starts: hold grants back from now. */
  start(): void {
    this.expected = this.options.expectedAgents();
    this.settling = false;
    this.holdUntilMs = this.now() + this.maxMs;
  }

  /** Whether a lookup may be granted the origin now. Cheap once the hold has ended. */
  allowed(): boolean {
    const now = this.now();
    if (now >= this.holdUntilMs) return true;
    if (!this.settling && this.options.registeredAgents() >= this.expected) {
      this.settling = true;
      this.holdUntilMs = Math.min(this.holdUntilMs, now + this.settleMs);
    }
    return now >= this.holdUntilMs;
  }
}
