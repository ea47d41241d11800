import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import type { AgentMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import { type BlobFetcher, type BlobLease, type BlobRequest } from "../registry/index.js";
import { type BlobStore, isStoreError, type PartialBlob } from "../store/index.js";
import type { LookupResult, Tracker } from "../tracker/index.js";
import type { PieceSource } from "./piece-source.js";
import type { KnownPeers } from "./known-peers.js";
import { lookupViaPeers, MAX_STAT_FANOUT } from "./peer-lookup.js";
import { NoticeWait } from "./notice-wait.js";
import { whenVerified } from "./piece-reader.js";
import { PiecePicker } from "./piece-picker.js";
import { ProgressAnnouncer } from "./progress-announcer.js";
import { ReceiveBudget } from "./receive-budget.js";
import { SwarmDownload } from "./swarm-download.js";
import { type SwarmSelf, swarmZone } from "./swarm-round.js";
import { SwarmPeers } from "./swarm-peers.js";
import { DEFAULT_SWARM_TUNING, MAX_GRANT_MOVES_WAITED, type SwarmTuning } from "./swarm-tuning.js";
import { raceSignal } from "../util/index.js";

/** How often to ask meanwhile; with notices, the grantee's first announce (or its grant's release) wakes the wait. */
export const GRANTEE_POLL_MS = 100;
export const GRANTEE_NOTICE_POLL_MS = 1_000;
/**
 * How long to keep asking a tracker that is rebuilding its state after a fail-over (it answers with
 * retryAfterMs: holders may not have re-announced yet). The tracker holds a blob back for 4 s at most.
 * Like the grantee wait, the mirror counts it as progress toward a response (BlobRequest.onSourceProgress).
 */
const TRACKER_REBUILD_WAIT_MS = 6_000;
/** The longest pause between those lookups, whatever the tracker asks for. */
const MAX_RETRY_AFTER_MS = 2_000;
/**
 * Blobs for which this agent remembers suppliers of a copy that failed its digest, and how many per blob
 * (a blob is fetched from a few dozen peers at most): a bound on what lying peers can make it keep.
 */
const MAX_SUSPECT_BLOBS = 1_024;
const MAX_SUSPECTS_PER_BLOB = 64;
const NO_SUSPECTS: ReadonlySet<string> = new Set();

export interface SwarmFetcherOptions {
  readonly store: BlobStore;
  readonly tracker: Tracker;
  readonly pieces: PieceSource;
  /** Fetches from the origin registry (OriginFetcher); used when granted, stalled or without a tracker. */
  readonly origin: BlobFetcher;
  /** The agents this one has heard of, asked while the tracker is unreachable (degraded mode). */
  readonly knownPeers?: KnownPeers | undefined;
  readonly metrics: AgentMetrics;
  readonly logger: Logger;
  readonly tuning?: Partial<SwarmTuning>;
  /**
   * This agent's id and zone as registered with the tracker: with a zone, same-zone peers are preferred
   * and cross-zone pieces are shared out among the zone's downloading agents. Without it, no preference.
   */
  readonly self?: SwarmSelf | undefined;
}

/** What a flight tells its readers once its source is chosen: a lease without its release. */
type FlightStart = Omit<BlobLease, "release">;

interface Flight {
  readonly controller: AbortController;
  readonly started: Promise<FlightStart>;
  /** Settles when the flight is over (the blob committed, or given up). */
  readonly done: Promise<void>;
  leases: number;
  /** Acquirers still waiting for `started`, told of each sign that a source is under way (BlobRequest.onSourceProgress). */
  readonly waiting: Set<() => void>;
}

/**
 * The agent's BlobFetcher: peers first, the origin only when the tracker grants it (or is unreachable).
 * One flight per digest however many requests want it; the flight stops, keeping its pieces, when its
 * last reader leaves.
 */
export class SwarmFetcher implements BlobFetcher {
  private readonly flights = new Map<Digest, Flight>();
  /** Per digest, agents whose pieces made a copy that failed its digest; least recently suspected first out. */
  private readonly suspects = new Map<Digest, Set<string>>();
  private readonly tuning: SwarmTuning;
  /** What all of this agent's downloads may ask their peers for at once. */
  private readonly budget: ReceiveBudget;

  constructor(private readonly options: SwarmFetcherOptions) {
    this.tuning = { ...DEFAULT_SWARM_TUNING, ...options.tuning };
    this.budget = new ReceiveBudget(this.tuning, options.metrics);
  }

  async acquire(request: BlobRequest, signal: AbortSignal): Promise<BlobLease> {
    signal.throwIfAborted();
    const flight = this.flights.get(request.digest) ?? this.start(request);
    flight.leases++;
    const onSourceProgress = request.onSourceProgress;
    if (onSourceProgress !== undefined) flight.waiting.add(onSourceProgress);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      flight.leases--;
      if (flight.leases === 0 && this.flights.get(request.digest) === flight)
        flight.controller.abort(new Error("no reader wants this blob any more"));
    };
    try {
      const { partial, source, contentType, progressAtMs } = await raceSignal(flight.started, signal);
      return { partial, source, contentType, progressAtMs, release };
    } catch (error) {
      release();
      throw error;
    } finally {
      if (onSourceProgress !== undefined) flight.waiting.delete(onSourceProgress);
    }
  }

  private suspectsOf(digest: Digest): ReadonlySet<string> {
    return this.suspects.get(digest) ?? NO_SUSPECTS;
  }

  private suspect(digest: Digest, agentIds: readonly string[]): void {
    const set = this.suspects.get(digest) ?? new Set<string>();
    this.suspects.delete(digest);
    for (const id of agentIds) if (set.size < MAX_SUSPECTS_PER_BLOB) set.add(id);
    this.suspects.set(digest, set);
    for (const oldest of this.suspects.keys()) {
      if (this.suspects.size <= MAX_SUSPECT_BLOBS) break;
      this.suspects.delete(oldest);
    }
  }

  async close(): Promise<void> {
    const flights = [...this.flights.values()];
    for (const flight of flights) flight.controller.abort(new Error("agent shutting down"));
    await Promise.allSettled(flights.map((f) => f.done));
  }

  private start(request: BlobRequest): Flight {
    const controller = new AbortController();
    let resolveStarted!: (value: Awaited<Flight["started"]>) => void;
    let rejectStarted!: (error: unknown) => void;
    const started = new Promise<Awaited<Flight["started"]>>((resolve, reject) => {
      resolveStarted = resolve;
      rejectStarted = reject;
    });
    started.catch(() => undefined);
    const waiting = new Set<() => void>();
    const sourceProgress = (): void => {
      for (const told of waiting) told();
    };
    const done = this.run(request, controller.signal, resolveStarted, sourceProgress).catch((error: unknown) => {
      rejectStarted(error);
      if (!controller.signal.aborted) this.options.logger.debug({ err: error, digest: request.digest }, "blob flight failed");
    });
    const flight: Flight = { controller, started, done, leases: 0, waiting };
    this.flights.set(request.digest, flight);
    this.options.metrics.inflightFetches.inc();
    void done.finally(() => {
      if (this.flights.get(request.digest) === flight) this.flights.delete(request.digest);
      this.options.metrics.inflightFetches.dec();
    });
    return flight;
  }

  /** One flight: decide the source, fetch, commit (the store records every piece's hash with the blob). */
  private async run(
    request: BlobRequest,
    signal: AbortSignal,
    started: (value: FlightStart) => void,
    sourceProgress: () => void,
  ): Promise<void> {
    // Watched before the first lookup: a notice that comes while it is under way is not missed.
    const notices = new NoticeWait(this.options.tracker, request.digest);
    try {
      await this.fetch(request, signal, started, notices, sourceProgress);
    } finally {
      notices.close();
    }
  }

  private async fetch(
    request: BlobRequest,
    signal: AbortSignal,
    started: (value: FlightStart) => void,
    notices: NoticeWait,
    sourceProgress: () => void,
  ): Promise<void> {
    const { tracker, metrics } = this.options;
    const startedAt = performance.now();
    const first = await this.settle(request, await this.lookup(request, true, signal), signal, notices, sourceProgress);
    let lookup = first.lookup;
    let granteeWaitedMs = first.granteeWaitedMs;
    // Degraded (no tracker): the peers this agent knows are asked before the origin.
    let degraded = false;
    const hadSession = tracker.connected;
    if (lookup === undefined) {
      lookup = await this.lookupViaPeers(request, [], signal);
      degraded = lookup !== undefined;
    }
    // The lookup failed without a session, and one came up while the peers were asked (up to
    // STAT_FANOUT_TIMEOUT_MS): it decides, rather than the origin without a grant. (Read through
    // this.options: TypeScript takes `tracker.connected` for the value `hadSession` saw.)
    if (lookup === undefined && !hadSession && this.options.tracker.connected) {
      const again = await this.settle(request, await this.lookup(request, true, signal), signal, notices, sourceProgress);
      lookup = again.lookup;
      granteeWaitedMs += again.granteeWaitedMs;
    }
    if (lookup === undefined || lookup.origin.granted || lookup.size === 0) {
      // Which agent went to the origin, and why, is what an operator (or a test) asks when the origin sent more than once.
      this.options.logger.info(
        {
          digest: request.digest,
          reason: lookup === undefined ? "no tracker" : lookup.origin.granted ? "granted" : "no holder announced it in time",
          granteeWaitedMs: Math.round(granteeWaitedMs),
        },
        "fetching the blob from the origin",
      );
      // A source is under way: the origin's answer gets a response-start deadline of its own.
      sourceProgress();
      await this.fromOrigin(request, signal, started);
      metrics.swarmDownloadDuration.observe({ source: "origin" }, (performance.now() - startedAt) / 1000);
      return;
    }
    const partial = await this.options.store.openPartial(request.digest, lookup.size, { pieceSize: lookup.pieceSize });
    const zone = swarmZone(this.options.self, lookup);
    const peers = new SwarmPeers(partial.pieceCount, zone);
    const picker = new PiecePicker({
      pieceCount: partial.pieceCount,
      blobBytes: partial.size,
      selfAgentId: this.options.self?.agentId,
      zone,
      tuning: this.tuning,
      random: Math.random,
    });
    peers.distrust(this.suspectsOf(request.digest));
    started({ partial, source: "peer", contentType: partial.mediaType, progressAtMs: () => peers.activityAtMs() });
    try {
      const hashes: (Uint8Array | undefined)[] = Array.from({ length: partial.pieceCount }, () => undefined);
      let first: LookupResult = lookup;
      for (;;) {
        const download = new SwarmDownload({
          partial,
          tracker,
          pieces: this.options.pieces,
          hashes,
          metrics,
          logger: this.options.logger,
          tuning: this.tuning,
          self: this.options.self,
          signal,
          first,
          peers,
          picker,
          knownPeers: this.options.knownPeers,
          degraded,
          expectedSize: request.size,
          budget: this.budget,
        });
        const outcome = await download.run();
        // Every piece may be here even when the round ended otherwise (e.g. the last ones arrived as it gave up).
        if (outcome.kind === "complete" || partial.heldPieces === partial.pieceCount) break;
        metrics.swarmStalls.inc({ reason: outcome.reason });
        if (outcome.granteeProgressing) {
          // The grantee is still bringing pieces in from the origin: wait for them rather than fetch a second
          // copy (asking for the grant now would take it from the grantee, which the tracker may think stalled).
          const fromTracker = await this.lookup(request, false, signal, outcome.excludedAgents);
          const next = fromTracker ?? (await this.lookupViaPeers(request, outcome.excludedAgents, signal));
          if (next !== undefined && next.size > 0) {
            degraded = fromTracker === undefined;
            first = next;
            continue;
          }
        }
        // Holders that sent bad pieces or kept failing are named, so their copies do not keep the tracker from
        // granting us the origin. The origin only with the grant (or without a tracker): otherwise a peer slow
        // on a busy machine would make several agents fetch the same blob from the origin at once.
        const again = await this.lookup(request, true, signal, outcome.excludedAgents);
        if (again === undefined && outcome.suppliers > 0) {
          // No tracker, but peers hold what is missing: keep to them (a peer that keeps failing is given up
          // after a few calls, and then only the origin is left).
          const viaPeers = await this.lookupViaPeers(request, outcome.excludedAgents, signal);
          if (viaPeers !== undefined) {
            degraded = true;
            first = viaPeers;
            continue;
          }
        }
        if (again === undefined || again.origin.granted) {
          this.options.logger.info(
            {
              digest: request.digest,
              held: partial.heldPieces,
              of: partial.pieceCount,
              granted: again?.origin.granted ?? false,
              reason: outcome.reason,
            },
            "no peer can supply the rest; fetching it from the origin",
          );
          await this.fromOrigin(request, signal, () => undefined);
          metrics.swarmDownloadDuration.observe({ source: "origin" }, (performance.now() - startedAt) / 1000);
          return;
        }
        degraded = false;
        first = again;
      }
      try {
        await partial.commit();
      } catch (error) {
        if (isStoreError(error, "ERR_STORE_DIGEST_MISMATCH")) {
          metrics.digestMismatches.inc({ source: "peer" });
          // Every piece matched the hashes it was checked against, yet the blob does not match its digest: the
          // hashes were wrong, and so were the peers whose pieces were kept. The next fetch of this digest names
          // them to the tracker (which then answers with another claim, or grants the origin) and never asks them.
          const suppliers = peers.suppliers().filter((id) => id !== this.options.self?.agentId);
          this.suspect(request.digest, suppliers);
          this.options.logger.warn(
            { digest: request.digest, suppliers },
            "a blob assembled from peers failed its digest check; its suppliers are distrusted for this blob",
          );
        }
        throw error;
      }
      metrics.swarmDownloadDuration.observe({ source: "peer" }, (performance.now() - startedAt) / 1000);
    } catch (error: unknown) {
      // Readers already wait on this partial: fail them now instead of leaving them waiting for pieces
      // nobody fetches any more (the held pieces stay for a later attempt).
      if (partial.state === "open")
        await partial.abort(error instanceof Error ? error : new Error(String(error)), { keepData: true }).catch(() => undefined);
      throw error;
    }
  }

  /**
   * Another agent holds the grant but has not announced the blob yet: give it a moment (a grant that moves
   * to a third agent is a new fetch, and restarts the wait). A tracker that is rebuilding after a fail-over
   * granted nothing because holders may still re-announce: ask it again. Each such answer is a sign that a
   * source is under way (`sourceProgress`). Returns the last lookup (undefined: no tracker) and how long
   * the grantee was waited for.
   */
  private async settle(
    request: BlobRequest,
    first: LookupResult | undefined,
    signal: AbortSignal,
    notices: NoticeWait,
    sourceProgress: () => void,
  ): Promise<{ lookup: LookupResult | undefined; granteeWaitedMs: number }> {
    const { tracker } = this.options;
    const waitMs = this.tuning.granteeWaitMs;
    let lookup = first;
    let granteeWaitedMs = 0;
    let totalWaitedMs = 0;
    let rebuildWaitedMs = 0;
    let grantee: string | undefined;
    let moves = 0;
    while (lookup && lookup.size === 0 && !lookup.origin.granted) {
      const retryAfterMs = lookup.retryAfterMs ?? 0;
      let pauseMs: number;
      if (retryAfterMs > 0) {
        if (rebuildWaitedMs >= TRACKER_REBUILD_WAIT_MS) break;
        sourceProgress();
        pauseMs = Math.min(Math.max(retryAfterMs, GRANTEE_POLL_MS), MAX_RETRY_AFTER_MS);
        rebuildWaitedMs += pauseMs;
      } else {
        const current = lookup.origin.granteeAgentId;
        if (current !== undefined && current !== "") {
          if (grantee !== undefined && current !== grantee && moves < MAX_GRANT_MOVES_WAITED) {
            moves++;
            granteeWaitedMs = 0;
          }
          grantee = current;
          sourceProgress();
        }
        if (granteeWaitedMs >= waitMs) break;
        pauseMs = Math.min(tracker.sendsNotices ? GRANTEE_NOTICE_POLL_MS : GRANTEE_POLL_MS, waitMs - granteeWaitedMs);
        const pausedAt = performance.now();
        await notices.sleep(pauseMs, signal);
        const pausedMs = performance.now() - pausedAt;
        granteeWaitedMs += pausedMs;
        totalWaitedMs += pausedMs;
        lookup = await this.lookup(request, true, signal);
        continue;
      }
      await sleep(pauseMs, undefined, { signal });
      lookup = await this.lookup(request, true, signal);
    }
    return { lookup, granteeWaitedMs: totalWaitedMs };
  }

  /**
   * Fetches (the rest of) a blob from the origin as its grantee, publishing progress (bitmap and the piece
   * hashes the store computes as it writes), so peers can take pieces from this agent while they arrive.
   */
  private async fromOrigin(
    request: BlobRequest,
    signal: AbortSignal,
    started: (value: { partial: PartialBlob; source: "origin"; contentType: string | undefined }) => void,
  ): Promise<void> {
    const lease = await this.options.origin.acquire(request, signal);
    try {
      const { partial } = lease;
      started({ partial, source: "origin", contentType: lease.contentType });
      // Every piece at once: peers relay fresh pieces from the grantee as soon as it holds them, and can keep
      // them only once the tracker has their hashes, which only the grantee can publish.
      const announcer = new ProgressAnnouncer(this.options.tracker, partial, 0);
      for (let index = 0; index < partial.pieceCount; index++) {
        await partial.waitForPiece(index, signal);
        announcer.tick();
      }
      // The last piece is servable once the digest is verified, before commit() has made the blob durable
      // (seconds on a busy disk): announced then, not with the complete blob after the fsync.
      await whenVerified(partial, signal);
      announcer.tick(true);
      await partial.whenSettled();
    } finally {
      lease.release();
    }
  }

  private async lookup(
    request: BlobRequest,
    wantOriginGrant: boolean,
    signal: AbortSignal,
    named: readonly string[] = [],
  ): Promise<LookupResult | undefined> {
    const { digest } = request;
    const excludedAgents = [...new Set([...named, ...this.suspectsOf(digest)])];
    try {
      const result = await this.options.tracker.lookup(digest, {
        wantOriginGrant,
        signal,
        ...(excludedAgents.length > 0 ? { excludedAgents } : {}),
        ...(request.size === undefined ? {} : { expectedSize: request.size }),
      });
      if (request.size !== undefined && result.size > 0 && result.size !== request.size) {
        this.options.logger.warn(
          { digest, size: result.size, expected: request.size },
          "tracker answered with a size the manifest contradicts",
        );
        return { ...result, size: 0, pieceSize: 0, holders: [], pieceHashes: [] };
      }
      this.options.metrics.trackerLookups.inc({
        result: result.origin.granted
          ? "granted"
          : result.holders.length > 0
            ? "holders"
            : (result.retryAfterMs ?? 0) > 0
              ? "retry"
              : "none",
      });
      this.options.knownPeers?.remember(digest, result.holders, this.options.self?.agentId);
      return result;
    } catch (error) {
      signal.throwIfAborted();
      this.options.metrics.trackerLookups.inc({ result: "unavailable" });
      this.options.logger.debug({ err: error, digest }, "tracker unavailable");
      return undefined;
    }
  }

  /**
   * Degraded mode: the tracker's answer rebuilt from the peers this agent knows of (for this blob, else
   * any it heard of lately), `excluded` left out. Undefined when none holds any of the blob.
   */
  private async lookupViaPeers(request: BlobRequest, excluded: readonly string[], signal: AbortSignal): Promise<LookupResult | undefined> {
    const known = this.options.knownPeers;
    if (known === undefined) return undefined;
    const { digest } = request;
    const skip = new Set([...excluded, ...this.suspectsOf(digest), this.options.self?.agentId ?? ""]);
    const candidates = [...known.holdersOf(digest), ...known.recent(MAX_STAT_FANOUT)].filter((p) => !skip.has(p.agentId));
    const viaPeers = await lookupViaPeers({ digest, candidates, pieces: this.options.pieces, signal });
    this.options.metrics.trackerLookups.inc({ result: viaPeers === undefined ? "peers_none" : "peers" });
    if (viaPeers === undefined) return undefined;
    if (request.size !== undefined && viaPeers.result.size !== request.size) {
      this.options.logger.warn(
        { digest, size: viaPeers.result.size, expected: request.size },
        "peers claim a size the manifest contradicts",
      );
      return undefined;
    }
    known.remember(digest, viaPeers.exchanged, this.options.self?.agentId);
    this.options.logger.info(
      { digest, holders: viaPeers.result.holders.length },
      "tracker unreachable: taking the blob from the peers this agent knows",
    );
    return viaPeers.result;
  }
}
