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
 * The rate adapts to how busy the controller's event loop is (its utilization, 0..1, measured over
 * ADAPT_INTERVAL_MS): above HIGH_LOAD it halves, below LOW_LOAD it grows by a quarter, between
 * MIN_ANNOUNCES_PER_SECOND and the configured rate. A controller sharing its cores (or on a slow node)
 * then keeps time for lookups, Lease renewals and readiness probes instead of losing its leadership to
 * a re-announce storm.
 */
export const ADAPT_INTERVAL_MS = 500;
export const HIGH_LOAD = 0.8;
export const LOW_LOAD = 0.6;
export const MIN_ANNOUNCES_PER_SECOND = 500;
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
  /**
   * The event loop's utilization (0..1) since the previous call; the rate adapts to it. Fixed rate when
   * absent. TrackerServer passes perf_hooks' eventLoopUtilization.
   */
  readonly load?: () => number;
}

/** Token bucket with a FIFO of paused sessions; one timer, running only while a session waits. */
export class AnnounceGate {
  private readonly maxPerSecond: number;
  private perSecond: number;
  private readonly burst: number;
  private readonly load: (() => number) | undefined;
  private adaptedAtMs: number;
  private readonly now: () => number;
  private tokens: number;
  private refilledAtMs: number;
  private readonly waiting: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(options: AnnounceGateOptions = {}) {
    this.maxPerSecond = options.perSecond ?? DEFAULT_ANNOUNCES_PER_SECOND;
    this.perSecond = this.maxPerSecond;
    this.load = options.load;
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

  /** Follows the loop's utilization: halve the rate when busy, grow it by a quarter when there is room. */
  private adapt(now: number): void {
    if (this.load === undefined || now - this.adaptedAtMs < ADAPT_INTERVAL_MS) return;
    this.adaptedAtMs = now;
    const load = this.load();
    if (load > HIGH_LOAD) this.perSecond = Math.max(Math.min(MIN_ANNOUNCES_PER_SECOND, this.maxPerSecond), this.perSecond / 2);
    else if (load < LOW_LOAD) this.perSecond = Math.min(this.maxPerSecond, this.perSecond * 1.25);
  }

  private stopTimer(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
