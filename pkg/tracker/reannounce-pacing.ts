/**
 * How an agent re-announces its inventory on a new session. A new session always starts empty on the
 * tracker, so the whole inventory goes again; after a fail-over every agent does so at once. The agent
 * registers at once (lookups work at once: the new leader answers from what it already has), then waits
 * a random delay within a spread and sends the inventory in batches of a few dozen blobs, one batch per
 * interval, each batch only when the stream is not backed up. The tracker bounds what it applies per
 * second anyway (announce-gate.ts); the spread keeps thousands of agents from queueing there at once.
 */

/**
 * After a lost session, the first batch waits uniformly within a spread. The tracker says how long in
 * `registered` (spreadForSessions: it knows how many agents are coming back); this is the agent's own
 * choice for a tracker that does not say: 2,000 agents come back over 10 s, ~200 a second.
 */
export const DEFAULT_REANNOUNCE_SPREAD_MS = 10_000;
/** The tracker's spread grows by this much per session it holds: 200 agents start re-announcing per second. */
export const REANNOUNCE_SPREAD_PER_SESSION_MS = 5;
/**
 * The longest spread the tracker asks for, and the longest an agent accepts. Longer would only delay what
 * the tracker's announce gate already paces, and leave blobs unknown longer than its rebuild grace.
 */
export const MAX_REANNOUNCE_SPREAD_MS = 10_000;

/** The spread a tracker holding `sessions` sessions asks re-announcing agents for. */
export function spreadForSessions(sessions: number): number {
  return Math.min(MAX_REANNOUNCE_SPREAD_MS, Math.max(1, sessions) * REANNOUNCE_SPREAD_PER_SESSION_MS);
}
/** Blobs per batch: ~64 announce messages, a few KB to a few hundred KB with their piece hashes. */
export const DEFAULT_REANNOUNCE_BATCH_BLOBS = 64;
/** Between batches: an agent re-announces at most 640 blobs a second (a few hundred blobs in under a second). */
export const DEFAULT_REANNOUNCE_BATCH_INTERVAL_MS = 100;

export interface ReannouncePacingOptions {
  /** 0: the first batch goes at once. */
  readonly spreadMs?: number;
  readonly batchBlobs?: number;
  readonly batchIntervalMs?: number;
  /** Uniform in [0, 1); Math.random by default (tests pass a fixed one). */
  readonly random?: () => number;
}

/** One step of a re-announce: send `blobs` blobs at `atMs` after the session registered. */
export interface ReannounceStep {
  readonly atMs: number;
  readonly blobs: number;
}

export class ReannouncePacing {
  readonly spreadMs: number;
  readonly batchBlobs: number;
  readonly batchIntervalMs: number;
  private readonly random: () => number;

  constructor(options: ReannouncePacingOptions = {}) {
    this.spreadMs = options.spreadMs ?? DEFAULT_REANNOUNCE_SPREAD_MS;
    this.batchBlobs = options.batchBlobs ?? DEFAULT_REANNOUNCE_BATCH_BLOBS;
    this.batchIntervalMs = options.batchIntervalMs ?? DEFAULT_REANNOUNCE_BATCH_INTERVAL_MS;
    this.random = options.random ?? Math.random;
    if (!(Number.isFinite(this.spreadMs) && this.spreadMs >= 0))
      throw new RangeError(`re-announce spread must be a finite number of ms >= 0, got ${this.spreadMs}`);
    if (!(Number.isInteger(this.batchBlobs) && this.batchBlobs >= 1))
      throw new RangeError(`re-announce batch must be a whole number of blobs >= 1, got ${this.batchBlobs}`);
    if (!(Number.isFinite(this.batchIntervalMs) && this.batchIntervalMs >= 0))
      throw new RangeError(`re-announce batch interval must be a finite number of ms >= 0, got ${this.batchIntervalMs}`);
  }

  /**
   * The wait before the first batch: random within the spread after a lost session (`resumed`), none on a
   * process's first session (agents start one by one; their first inventory is not a storm). The spread
   * is the tracker's (`trackerSpreadMs`, capped at MAX_REANNOUNCE_SPREAD_MS) when it gave one, else ours.
   */
  firstDelayMs(resumed: boolean, trackerSpreadMs = 0): number {
    if (!resumed) return 0;
    const spreadMs = trackerSpreadMs > 0 ? Math.min(trackerSpreadMs, MAX_REANNOUNCE_SPREAD_MS) : this.spreadMs;
    return Math.floor(this.random() * spreadMs);
  }

  /** `items` in a random order (Fisher-Yates): agents holding the same blob send it at different moments. */
  shuffle<T>(items: Iterable<T>): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.random() * (i + 1));
      const a = out[i] as T;
      out[i] = out[j] as T;
      out[j] = a;
    }
    return out;
  }

  /** The whole plan for `blobs` blobs when no batch has to wait for the stream (the load generator plays it). */
  plan(blobs: number, resumed: boolean, trackerSpreadMs = 0): ReannounceStep[] {
    const steps: ReannounceStep[] = [];
    const first = this.firstDelayMs(resumed, trackerSpreadMs);
    for (let sent = 0, i = 0; sent < blobs; sent += this.batchBlobs, i++) {
      steps.push({ atMs: first + i * this.batchIntervalMs, blobs: Math.min(this.batchBlobs, blobs - sent) });
    }
    return steps;
  }
}

export interface ReannouncerOptions<T> {
  readonly pacing: ReannouncePacing;
  /** Sends one batch (the caller queues and flushes it). */
  readonly send: (batch: T[]) => void;
  /** False while the stream is backed up: the batch waits for the next interval instead of piling up. */
  readonly ready: () => boolean;
}

/**
 * Plays ReannouncePacing for one session: a queue of what is still to be re-announced and one timer.
 * Items announced or withdrawn meanwhile are taken out (`forget`): their newer state goes out at once.
 */
export class Reannouncer<T> {
  private readonly queue = new Set<T>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: ReannouncerOptions<T>) {}

  /** Still to send. */
  get pending(): number {
    return this.queue.size;
  }

  /**
   * Starts over with `items` in a random order (a new session); `resumed` after a lost session: the first
   * batch waits within the spread, the tracker's (`trackerSpreadMs`) when it gave one.
   */
  start(items: Iterable<T>, resumed: boolean, trackerSpreadMs = 0): void {
    this.stop();
    const { pacing } = this.options;
    for (const item of pacing.shuffle(items)) this.queue.add(item);
    if (this.queue.size > 0) this.schedule(pacing.firstDelayMs(resumed, trackerSpreadMs));
  }

  forget(item: T): void {
    this.queue.delete(item);
    if (this.queue.size === 0) this.stop();
  }

  /** The session ended: nothing more is sent; the next one starts over. */
  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.clear();
  }

  private schedule(delayMs: number): void {
    this.timer = setTimeout(() => {
      this.tick();
    }, delayMs);
    this.timer.unref();
  }

  private tick(): void {
    this.timer = undefined;
    if (this.options.ready()) {
      const batch: T[] = [];
      for (const item of this.queue) {
        if (batch.length >= this.options.pacing.batchBlobs) break;
        batch.push(item);
      }
      for (const item of batch) this.queue.delete(item);
      this.options.send(batch);
    }
    if (this.queue.size > 0) this.schedule(this.options.pacing.batchIntervalMs);
  }
}
