import type { Digest } from "../oci/index.js";

/**
 * Blobs one agent watches at most: a download looks up a handful of blobs at once (containerd pulls three
 * layers at a time), so 64 is far above an honest agent and bounds what a rogue one makes the tracker
 * keep (a few hundred bytes a watch). The oldest watch goes first.
 */
export const MAX_WATCHES_PER_AGENT = 64;
/**
 * A watch ends this long after the lookup that made or renewed it. An agent waiting on notices still looks
 * the blob up every couple of seconds (its fallback poll), which renews it; an agent that gave up on the
 * blob stops being told about it soon after.
 */
export const WATCH_TTL_MS = 5_000;
/**
 * Notices of one blob go out at most once per this interval (the first at once, later changes at the end
 * of the interval): a blob that hundreds of downloaders announce every 100 ms costs one round of notices
 * per interval, not one per announce. Chosen with the simulator (npm run sim; docs/scale.md).
 */
export const DEFAULT_NOTICE_INTERVAL_MS = 100;

/**
 * Notices of one blob per second at most, over all its watchers: a blob with more watchers than this
 * times the interval gets its rounds further apart (2 ms per watcher), so neither the notices of a
 * popular blob nor the lookups they cause grow with the number of agents pulling it. Chosen with the
 * simulator (docs/scale.md).
 */
export const DEFAULT_NOTICES_PER_BLOB_PER_SECOND = 500;

/**
 * Agents whose announces one round tells of, at most: beyond it the round says only "changed" (each watcher
 * looks the blob up), because listing them would make a notice as large as a lookup answer.
 */
export const MAX_CHANGED_HOLDERS_PER_ROUND = 50;

/** What changed of a blob since its last round of notices. */
export interface RoundChanges {
  /** The agents whose announces changed it; undefined when more than MAX_CHANGED_HOLDERS_PER_ROUND did. */
  readonly holders: ReadonlySet<string> | undefined;
  /** Its origin grant was released. */
  readonly grantReleased: boolean;
}

/** Runs `task` after `delayMs`; returns a function that cancels it. Injectable (tests, the simulator). */
export type Scheduler = (task: () => void, delayMs: number) => () => void;

/** The default Scheduler: setTimeout that keeps no process alive (a round of notices is never worth waiting for at exit). */
export function scheduleUnref(task: () => void, delayMs: number): () => void {
  const timer = setTimeout(task, delayMs);
  timer.unref();
  return () => {
    clearTimeout(timer);
  };
}

/**
 * `V`: what the tracker remembers per watch (what the watcher was last told, so a notice can carry only
 * what is new to it); handed back with every delivery, and replaced by the next watch().
 */
export interface BlobWatchersOptions<V = void> {
  readonly now: () => number;
  readonly schedule: Scheduler;
  /**
   * Tells `agentId` that `digest` changed (`changes`: what, since the last round; `view`: what the watch
   * remembers); false when the notice was dropped (its stream is not draining).
   */
  readonly deliver: (agentId: string, digest: Digest, view: V, changes: RoundChanges) => boolean;
  readonly intervalMs?: number;
  /** DEFAULT_NOTICES_PER_BLOB_PER_SECOND when absent; Infinity: the interval alone. */
  readonly perBlobPerSecond?: number;
  readonly ttlMs?: number;
  readonly maxPerAgent?: number;
  /** Called with the outcome of every notice, and with the number of watches whenever it changes. */
  readonly onNotice?: (delivered: boolean) => void;
  readonly onWatches?: (count: number) => void;
}

/** A blob's notices: when the last round went out, and what changed since (a round is due then). */
interface BlobRound {
  lastMs: number;
  /** What changed since the last round; undefined: nothing. */
  pending: { holders: Set<string> | undefined; grantReleased: boolean } | undefined;
  cancel: (() => void) | undefined;
}

/** One watch: when its agent last looked the blob up, and what the tracker remembers for it. */
interface Watch<V> {
  at: number;
  view: V;
}

/**
 * Which agents wait for news of which blobs ("watchers": they looked the blob up and do not hold it
 * complete), and the notices that tell them. Bounded: MAX_WATCHES_PER_AGENT watches per agent, each
 * ending WATCH_TTL_MS after its last lookup, all of an agent's ending with its session. Notices are
 * coalesced per blob: at most one round per interval, so a watcher hears of a blob at most once an
 * interval however many agents announce it.
 */
export class BlobWatchers<V = void> {
  /** Per agent, the blobs it watches and when it last looked each up; in lookup order (oldest first). */
  private readonly byAgent = new Map<string, Map<Digest, Watch<V>>>();
  private readonly byBlob = new Map<Digest, Set<string>>();
  private readonly rounds = new Map<Digest, BlobRound>();
  private watches = 0;
  private readonly intervalMs: number;
  private readonly perBlobPerSecond: number;
  private readonly ttlMs: number;
  private readonly maxPerAgent: number;

  constructor(private readonly options: BlobWatchersOptions<V>) {
    this.intervalMs = options.intervalMs ?? DEFAULT_NOTICE_INTERVAL_MS;
    this.perBlobPerSecond = options.perBlobPerSecond ?? DEFAULT_NOTICES_PER_BLOB_PER_SECOND;
    this.ttlMs = options.ttlMs ?? WATCH_TTL_MS;
    this.maxPerAgent = options.maxPerAgent ?? MAX_WATCHES_PER_AGENT;
  }

  /** Watches in all (the gauge). */
  get size(): number {
    return this.watches;
  }

  /** Whether `agentId` watches `digest` now. */
  isWatching(agentId: string, digest: Digest): boolean {
    const at = this.byAgent.get(agentId)?.get(digest)?.at;
    return at !== undefined && this.options.now() - at < this.ttlMs;
  }

  /**
   * `agentId` looked `digest` up: it watches it (again) from now on, with `view` (what it was answered).
   * Its expired watches go (the oldest come first: a lookup moves its watch to the end), and its oldest
   * past the cap.
   */
  watch(agentId: string, digest: Digest, view: V): void {
    const now = this.options.now();
    let mine = this.byAgent.get(agentId);
    if (mine === undefined) {
      mine = new Map();
      this.byAgent.set(agentId, mine);
    }
    const known = mine.delete(digest);
    mine.set(digest, { at: now, view });
    for (const [oldest, { at }] of mine) {
      if (now - at < this.ttlMs) break;
      this.remove(agentId, oldest, mine);
    }
    if (!known) {
      let watchers = this.byBlob.get(digest);
      if (watchers === undefined) {
        watchers = new Set();
        this.byBlob.set(digest, watchers);
      }
      watchers.add(agentId);
      this.watches++;
      for (const oldest of mine.keys()) {
        if (mine.size <= this.maxPerAgent) break;
        this.remove(agentId, oldest, mine);
      }
    }
    this.options.onWatches?.(this.watches);
  }

  /** `agentId` holds the blob complete, withdrew it, or is gone: no more notices of it. */
  unwatch(agentId: string, digest: Digest): void {
    const mine = this.byAgent.get(agentId);
    if (mine === undefined || !mine.has(digest)) return;
    this.remove(agentId, digest, mine);
    this.options.onWatches?.(this.watches);
  }

  /** Its session ended: every watch of the agent goes. */
  forget(agentId: string): void {
    const mine = this.byAgent.get(agentId);
    if (mine === undefined) return;
    for (const digest of [...mine.keys()]) this.remove(agentId, digest, mine);
    this.byAgent.delete(agentId);
    this.options.onWatches?.(this.watches);
  }

  /**
   * `digest` changed: by an announce of `by` (which is not told of its own change), or for everyone
   * (undefined: its grant was released). The watchers hear of it now, or at the end of the blob's interval.
   */
  changed(digest: Digest, by?: string): void {
    const watchers = this.byBlob.get(digest);
    if (watchers === undefined) return;
    const now = this.options.now();
    const intervalMs = Math.max(this.intervalMs, (watchers.size * 1000) / this.perBlobPerSecond);
    let round = this.rounds.get(digest);
    const fresh = round === undefined || (round.cancel === undefined && now - round.lastMs >= intervalMs);
    round ??= { lastMs: now, pending: undefined, cancel: undefined };
    const pending = (round.pending ??= { holders: new Set(), grantReleased: false });
    if (by === undefined) pending.grantReleased = true;
    else if (pending.holders !== undefined && !pending.holders.has(by)) {
      if (pending.holders.size >= MAX_CHANGED_HOLDERS_PER_ROUND) pending.holders = undefined;
      else pending.holders.add(by);
    }
    if (fresh) {
      this.rounds.set(digest, round);
      this.send(digest, round);
      return;
    }
    if (round.cancel !== undefined) return;
    const due = round;
    due.cancel = this.options.schedule(
      () => {
        due.cancel = undefined;
        if (due.pending !== undefined && this.rounds.get(digest) === due) this.send(digest, due);
      },
      Math.max(0, round.lastMs + intervalMs - now),
    );
  }

  /** One round: every live watcher but the one agent that alone caused it hears of the blob and what changed. */
  private send(digest: Digest, round: BlobRound): void {
    const now = this.options.now();
    round.lastMs = now;
    const pending = round.pending;
    round.pending = undefined;
    const watchers = this.byBlob.get(digest);
    if (watchers === undefined) {
      this.rounds.delete(digest);
      return;
    }
    if (pending === undefined) return;
    const changes: RoundChanges = pending;
    const soleCause = !pending.grantReleased && pending.holders?.size === 1 ? [...pending.holders][0] : undefined;
    let expired = false;
    for (const agentId of [...watchers]) {
      const mine = this.byAgent.get(agentId);
      const watch = mine?.get(digest);
      if (mine === undefined || watch === undefined || now - watch.at >= this.ttlMs) {
        if (mine !== undefined) this.remove(agentId, digest, mine);
        expired = true;
        continue;
      }
      if (agentId === soleCause) continue;
      const delivered = this.options.deliver(agentId, digest, watch.view, changes);
      this.options.onNotice?.(delivered);
    }
    if (expired) this.options.onWatches?.(this.watches);
  }

  private remove(agentId: string, digest: Digest, mine: Map<Digest, Watch<V>>): void {
    if (!mine.delete(digest)) return;
    this.watches--;
    if (mine.size === 0) this.byAgent.delete(agentId);
    const watchers = this.byBlob.get(digest);
    watchers?.delete(agentId);
    if (watchers?.size === 0) {
      this.byBlob.delete(digest);
      this.rounds.get(digest)?.cancel?.();
      this.rounds.delete(digest);
    }
  }
}
