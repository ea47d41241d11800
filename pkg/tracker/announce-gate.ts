/**
 * A bound on the announce messages the tracker applies per second over all sessions. Past it, the session
 * that sent the last one is paused: grpc-js then stops reading its stream, HTTP/2 flow control fills, and
 * the agent's writes wait for 'drain' (its client already does). Lookups are never gated, so a burst of
 * announces (thousands of agents re-announcing after a fail-over) queues in the agents and the network
 * instead of in front of every lookup on the tracker's one thread.
 */

/**
 * Announces applied per second, over all sessions. An announce costs the controller ~35 µs (npm run
 * bench:tracker), so this is about half a core, leaving the other half of a core to lookups; a cold
 * rollout at the agents' default intervals sends ~10 a second per download (1,000 agents pulling three
 * layers each stay under it).
 */
export const DEFAULT_ANNOUNCES_PER_SECOND = 15_000;
/**
 * The rate adapts to how late the controller's event loop runs the gate's own tick (the delay every
 * lookup, Lease renewal and readiness probe waits too), worst over ADAPT_INTERVAL_MS: over HIGH_LAG_MS
 * (the lookup latency aimed at) it halves, under LOW_LAG_MS it grows by half, between MIN_ANNOUNCES_PER_SECOND and the
 * configured rate. A controller sharing its cores (or on a slow node) then stays responsive instead of
 * losing its leadership to a re-announce storm; one with cores to spare runs at the configured rate.
 */
export const ADAPT_INTERVAL_MS = 500;
export const HIGH_LAG_MS = 100;
export const LOW_LAG_MS = 40;
export const MIN_ANNOUNCES_PER_SECOND = 1_000;
/** Announces applied at once above the rate after a quiet spell (a bucket of this size). */
export const DEFAULT_ANNOUNCE_BURST = 1_500;
/** How often paused sessions are looked at again; at the default rate a tick brings 150 announces. */
export const ANNOUNCE_GATE_TICK_MS = 10;
/**
 * Messages a resumed session delivers before it can be paused again: grpc-js has parsed up to a readable
 * stream's high-water mark (16 objects) while it was paused. A tick resumes as many sessions as its
 * tokens cover at this many messages each.
 */
const MESSAGES_PER_RESUME = 16;

export interface AnnounceGateOptions {
  /** Announces per second over all sessions; 0 or Infinity: ungated. */
  readonly perSecond?: number;
  readonly burst?: number;
  /** Milliseconds clock; injectable for tests. */
  readonly now?: () => number;
  /** Whether the rate adapts to the event loop's delay (see HIGH_LAG_MS); true by default. */
  readonly adaptive?: boolean;
}

/** Token bucket with a FIFO of paused sessions; one timer, running only while a session waits. */
export class AnnounceGate {
  private readonly maxPerSecond: number;
  private perSecond: number;
  private readonly burst: number;
  private readonly adaptive: boolean;
  private adaptedAtMs: number;
  /** When the last tick ran, and the worst lateness of a tick since the last adaptation. */
  private tickedAtMs: number | undefined;
  private worstLagMs = 0;
  private readonly now: () => number;
  private tokens: number;
  private refilledAtMs: number;
  private readonly waiting: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: AnnounceGateOptions = {}) {
    this.maxPerSecond = options.perSecond ?? DEFAULT_ANNOUNCES_PER_SECOND;
    this.perSecond = this.maxPerSecond;
    this.adaptive = options.adaptive ?? true;
    this.burst = options.burst ?? DEFAULT_ANNOUNCE_BURST;
    this.now = options.now ?? Date.now;
    if (!(this.maxPerSecond >= 0)) throw new RangeError(`announces per second must be >= 0, got ${this.maxPerSecond}`);
    if (!(this.burst >= 1)) throw new RangeError(`announce burst must be >= 1, got ${this.burst}`);
    this.tokens = this.burst;
    this.refilledAtMs = this.now();
    this.adaptedAtMs = this.refilledAtMs;
  }

  /** The rate applied now (announces a second). */
  get rate(): number {
    return this.perSecond;
  }

  get ungated(): boolean {
    return this.perSecond === 0 || this.perSecond === Infinity;
  }

  /** Sessions paused now. */
  get paused(): number {
    return this.waiting.length;
  }

  /**
   * Charges one announce that was just applied. False when the bucket is empty: the caller pauses the
   * session and `resume` is called (once) when there is room again.
   */
  take(resume: () => void): boolean {
    if (this.ungated || this.closed) return true;
    this.refill();
    this.tokens -= 1;
    if (this.tokens >= 0) return true;
    this.waiting.push(resume);
    this.timer ??= setInterval(() => {
      this.tick();
    }, ANNOUNCE_GATE_TICK_MS);
    this.timer.unref();
    return false;
  }

  /** Resumes what the tokens gathered since the last tick cover; exported for tests with a fake clock. */
  tick(): void {
    const now = this.now();
    if (this.tickedAtMs !== undefined) this.worstLagMs = Math.max(this.worstLagMs, now - this.tickedAtMs - ANNOUNCE_GATE_TICK_MS);
    this.tickedAtMs = now;
    this.refill();
    let budget = this.tokens;
    while (budget > 0 && this.waiting.length > 0) {
      budget -= MESSAGES_PER_RESUME;
      this.waiting.shift()?.();
    }
    if (this.waiting.length === 0) this.stopTimer();
  }

  /** Resumes every paused session and stops gating (the server is closing). */
  close(): void {
    this.closed = true;
    this.stopTimer();
    for (const resume of this.waiting.splice(0)) resume();
  }

  private refill(): void {
    const now = this.now();
    this.adapt(now);
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.refilledAtMs) * this.perSecond) / 1000);
    this.refilledAtMs = now;
  }

  /**
   * Follows the loop's delay: halve the rate when ticks ran late, grow it by half when they ran on
   * time. Without ticks (nobody paused) there is nothing to slow down, and the rate grows back.
   */
  private adapt(now: number): void {
    if (!this.adaptive || now - this.adaptedAtMs < ADAPT_INTERVAL_MS) return;
    this.adaptedAtMs = now;
    const lag = this.worstLagMs;
    this.worstLagMs = 0;
    if (lag > HIGH_LAG_MS) this.perSecond = Math.max(Math.min(MIN_ANNOUNCES_PER_SECOND, this.maxPerSecond), this.perSecond / 2);
    else if (lag < LOW_LAG_MS) this.perSecond = Math.min(this.maxPerSecond, this.perSecond * 1.5);
  }

  private stopTimer(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.tickedAtMs = undefined;
  }
}
