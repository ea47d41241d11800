import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { ControllerMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import type { BlobClaims, Claim } from "./blob-claims.js";
import { type AgentRecord, AgentSessions } from "./agent-sessions.js";
import { type BlobSnapshot, BlobLedger } from "./blob-ledger.js";
import { type BlobWatchers, type Scheduler, scheduleUnref } from "./blob-watchers.js";
import type { WatchView } from "./notice-delta.js";
import { noticeWatchers } from "./notice-delivery.js";
import { DEFAULT_GRANT_STALL_TIMEOUT_MS, type GrantSnapshot, OriginGrants } from "./origin-grants.js";
import type { AgentCommand, PrefetchReport } from "./prefetch.js";
import { validatePrefetchReport } from "./prefetch.js";
import { RebuildGrace } from "./rebuild-grace.js";
import { admitSession, checkLookupAccess, type LookupAccess } from "./session-access.js";
import { TagDirectory } from "./tag-directory.js";
import { type TrackerEvent, TrackerObservers } from "./tracker-events.js";
import type { AgentIdentity, BlobAnnouncement, LookupResult, TagKey, TagRecord } from "./tracker.js";
import { type RegisterOptions, Session, type SessionCloseReason, type SessionOwner, type TrackerSession } from "./tracker-session.js";
import { validateActiveUploads, validateAnnouncement, validateIdentity, validateTagKey, validateTagRecord } from "./validation.js";

/**
 * Holders one lookup answers with, best ranked first. An agent fetches from a few dozen peers at most;
 * listing all of thousands would make each answer megabytes and each lookup O(holders).
 */
export const DEFAULT_MAX_LOOKUP_HOLDERS = 50;

export interface MemoryTrackerOptions {
  readonly logger: Logger;
  readonly metrics?: ControllerMetrics;
  readonly grantStallTimeoutMs?: number;
  /** Milliseconds clock; injectable for tests. */
  readonly now?: () => number;
  /** Identifies this tracker's state in `registered`; random by default. */
  readonly id?: string;
  /** Holders per lookup answer (DEFAULT_MAX_LOOKUP_HOLDERS). */
  readonly maxLookupHolders?: number;
  /** Uniform in [0, 1): ranking tie-breaks and the sampling of crowded tiers; Math.random by default. */
  readonly random?: () => number;
  /** The grace after an empty start while agents re-announce (rebuild-grace.ts); its defaults when absent. */
  readonly rebuildSettleMs?: number;
  readonly rebuildMaxMs?: number;
  readonly rebuildHoldMs?: number;
  /** At most one round of BlobChanged notices per blob per this interval (blob-watchers.ts); its default when absent. */
  readonly noticeIntervalMs?: number;
  /** Notices of one blob per second over all its watchers (blob-watchers.ts); its default when absent. */
  readonly noticesPerBlobPerSecond?: number;
  /** Runs the end-of-interval round of notices; setTimeout (unref'd) by default. The simulator passes its clock's. */
  readonly schedule?: Scheduler;
  /**
   * Notices carry the change (BlobChange) when it can be told exactly; true by default. False: every notice
   * says only "look it up", as trackers before deltas did (the simulator's comparison, tests of mixed versions).
   */
  readonly noticeDeltas?: boolean;
}

export interface TrackerSnapshot {
  readonly agents: readonly { readonly identity: AgentIdentity; readonly activeUploads: number; readonly blobs: readonly Digest[] }[];
  readonly blobs: readonly BlobSnapshot[];
  readonly grants: readonly GrantSnapshot[];
}

/**
 * The tracker's state: sessions, who holds which pieces of which blob, piece hashes and origin grants.
 * Owned by this one object and changed only through its methods, all synchronous, so no interleaving
 * can leave it half-updated (Kraken's scheduler keeps its state the same way). What agents announced is
 * kept in a BlobLedger (blob-ledger.ts), the origin grants in OriginGrants (origin-grants.ts), who waits for
 * news of which blob in BlobWatchers (blob-watchers.ts); this class owns the sessions and ties them together.
 */
export class MemoryTracker implements SessionOwner {
  readonly id: string;
  private readonly logger: Logger;
  private readonly metrics: ControllerMetrics | undefined;
  private readonly now: () => number;
  private readonly agents: AgentSessions;
  private readonly maxLookupHolders: number;
  private readonly random: () => number;
  /** What every agent announced: the claims about each blob, who holds what, and what each agent is charged. */
  private readonly blobs: BlobLedger<AgentRecord>;
  private readonly grants: OriginGrants;
  /** Tag → digest as agents resolved them upstream: pulls by tag still resolve while an upstream is down. */
  private readonly tags = new TagDirectory();
  private readonly observers: TrackerObservers;
  private readonly grace: RebuildGrace;
  /** Who waits for news of which blob, and the notices that tell them. */
  private readonly watchers: BlobWatchers<WatchView<AgentRecord>>;

  constructor(options: MemoryTrackerOptions) {
    this.id = options.id ?? randomUUID();
    this.logger = options.logger;
    this.metrics = options.metrics;
    const stallTimeoutMs = options.grantStallTimeoutMs ?? DEFAULT_GRANT_STALL_TIMEOUT_MS;
    this.now = options.now ?? Date.now;
    this.maxLookupHolders = options.maxLookupHolders ?? DEFAULT_MAX_LOOKUP_HOLDERS;
    this.random = options.random ?? Math.random;
    this.grace = new RebuildGrace({
      now: this.now,
      ...(options.rebuildSettleMs === undefined ? {} : { settleMs: options.rebuildSettleMs }),
      ...(options.rebuildMaxMs === undefined ? {} : { maxMs: options.rebuildMaxMs }),
      ...(options.rebuildHoldMs === undefined ? {} : { holdMs: options.rebuildHoldMs }),
    });
    const metrics = this.metrics;
    this.agents = new AgentSessions(this.logger, metrics);
    this.blobs = new BlobLedger<AgentRecord>({
      logger: this.logger,
      metrics,
      sameNode: (nodeName) => this.agents.onNode(nodeName),
    });
    this.grants = new OriginGrants({ logger: this.logger, metrics, now: this.now, stallTimeoutMs });
    this.observers = new TrackerObservers(this.logger);
    this.watchers = noticeWatchers<AgentRecord>({
      logger: this.logger,
      metrics,
      now: this.now,
      schedule: options.schedule ?? scheduleUnref,
      ...(options.noticeIntervalMs === undefined ? {} : { intervalMs: options.noticeIntervalMs }),
      ...(options.noticesPerBlobPerSecond === undefined ? {} : { perBlobPerSecond: options.noticesPerBlobPerSecond }),
      deltas: options.noticeDeltas ?? true,
      maxLookupHolders: this.maxLookupHolders,
      agent: (id) => this.agents.get(id),
      claims: (digest) => this.blobs.claimsOf(digest),
      grantee: (digest) => this.grants.granteeOf(digest),
    });
    if (!(this.maxLookupHolders >= 1)) throw new RangeError(`maxLookupHolders must be at least 1, got ${this.maxLookupHolders}`);
    if (!(stallTimeoutMs > 0)) throw new RangeError(`grantStallTimeoutMs must be positive, got ${stallTimeoutMs}`);
  }

  /**
   * Starts a session. Throws ERR_TRACKER_PERMISSION_DENIED when the membership refuses the agent. A
   * session already open under the same agent id is superseded: its state is dropped first, because
   * the agent re-announces its whole inventory on every new session.
   */
  register(identity: AgentIdentity, options: RegisterOptions = {}): TrackerSession {
    const valid = this.guard(() => validateIdentity(identity));
    admitSession(valid, options, this.agents.get(valid.agentId), { logger: this.logger, metrics: this.metrics });
    const recorded = options.membership?.identify?.(valid, options.remoteAddress) ?? valid;
    if (this.agents.get(valid.agentId) !== undefined) this.drop(valid.agentId, "superseded");
    this.grace.registered(valid.agentId, Math.max(0, Math.floor(options.resumeBlobs ?? 0)), this.agents.size);
    const token = this.agents.open(valid.agentId, recorded, options);
    this.logger.info(
      { agentId: valid.agentId, nodeName: recorded.nodeName, zone: recorded.zone, peerAddress: recorded.peerAddress },
      "agent registered",
    );
    this.observers.emit({ type: "registered", identity: recorded });
    return new Session(this, recorded, token);
  }

  /**
   * Records what `agentId` holds of a blob, replacing its earlier announcement of that digest. The
   * announcement joins the claim it agrees with or starts its own (blob-claims.ts): what one agent says
   * never overwrites what others said. A complete copy that makes its claim corroborated gets the claims
   * it contradicts discarded, and their complete holders excluded for the blob.
   */
  announce(agentId: string, announcement: BlobAnnouncement): void {
    const agent = this.agents.require(agentId);
    this.grace.announced(agentId);
    const a = this.guard(() => validateAnnouncement(announcement));
    const { entry, claim, previous, added } = this.blobs.record(agentId, agent, a);
    const wasComplete = previous?.complete === true;
    if (wasComplete !== a.complete) this.observers.emit({ type: "holding", agentId, digest: a.digest, complete: a.complete });
    if (this.grants.announced(agentId, a.digest, a.complete, a.heldPieces)) entry.lastGrantee = agentId;
    if (a.complete) {
      this.grants.forgetReleased(a.digest);
      this.discardContradicted(a.digest, entry, claim);
      this.watchers.unwatch(agentId, a.digest);
    }
    // News for the agents waiting on this blob: a new holder, more pieces (or their hashes), a complete copy.
    if (previous === undefined || (a.complete && !wasComplete) || a.heldPieces > previous.heldPieces || added > 0)
      this.watchers.changed(a.digest, agentId);
  }

  /** A corroborated claim wins: the claims it contradicts go, and their complete holders are excluded for the blob. */
  private discardContradicted(digest: Digest, entry: BlobClaims<AgentRecord>, winner: Claim<AgentRecord>): void {
    for (const { agentId, complete } of entry.contradicted(winner)) {
      const member = this.agents.get(agentId);
      if (member !== undefined) this.forget(member, digest);
      if (!complete) continue;
      this.metrics?.agentsExcluded.inc();
      this.logger.warn(
        { agentId, digest, corroboratingNodes: winner.completeNodes },
        "agent excluded for a blob: its complete copy contradicts complete copies on other nodes",
      );
      this.grants.release(agentId, digest);
    }
  }

  /** Forgets `agentId`'s announcement of a blob and releases its grant for it. Unknown digests are ignored. */
  withdraw(agentId: string, digest: Digest): void {
    const agent = this.agents.require(agentId);
    this.forget(agent, digest);
    this.watchers.unwatch(agentId, digest);
    if (this.grants.release(agentId, digest)) {
      this.logger.debug({ agentId, digest }, "origin grant released: withdrawn");
      // Whoever waits for the grantee's pieces may now be granted the fetch itself.
      this.watchers.changed(digest);
    }
  }

  /** An agent's progress on a prefetch assignment: handed to the observers, not kept. */
  prefetchReport(agentId: string, report: PrefetchReport): void {
    this.agents.require(agentId);
    this.observers.emit({ type: "prefetch-report", agentId, report: this.guard(() => validatePrefetchReport(report)) });
  }

  /**
   * Sends a command to the agent's session. False when the agent has no session or its session cannot
   * take commands (in-process sessions without a handler).
   */
  sendCommand(agentId: string, command: AgentCommand): boolean {
    return this.agents.sendCommand(agentId, command);
  }

  /** Whether the agent has announced a complete copy of the blob. */
  holdsComplete(agentId: string, digest: Digest): boolean {
    return this.blobs.holdsComplete(agentId, digest);
  }

  /** Identities of the agents with a live session. */
  agentIdentities(): AgentIdentity[] {
    return [...this.agents.values()].map((a) => a.identity);
  }

  /** Observes registrations, disconnects, complete copies and prefetch reports; returns the unsubscribe function. */
  subscribe(listener: (event: TrackerEvent) => void): () => void {
    return this.observers.subscribe(listener);
  }

  heartbeat(agentId: string, activeUploads: number): void {
    const agent = this.agents.require(agentId);
    agent.activeUploads = this.guard(() => validateActiveUploads(activeUploads));
  }

  /** Records which digest `agentId` resolved a tag to; an older record than its known one is ignored. */
  publishTag(agentId: string, record: TagRecord): void {
    const agent = this.agents.require(agentId);
    this.tags.record(
      agentId,
      agent.identity.nodeName,
      this.guard(() => validateTagRecord(record)),
      this.now(),
    );
  }

  /** The digest most nodes published for a tag (TagDirectory.resolve). Same access rules as lookup. */
  resolveTag(agentId: string, key: TagKey, access: LookupAccess = {}): TagRecord | undefined {
    const asker = this.agents.require(agentId);
    checkLookupAccess(asker, access);
    return this.tags.resolve(this.guard(() => validateTagKey(key)));
  }

  /**
   * Changes the zone `agentId` is ranked by (its Node's zone label changed). Returns whether there was a
   * session.
   */
  updateZone(agentId: string, zone: string): boolean {
    const agent = this.agents.get(agentId);
    if (agent === undefined || agent.identity.zone === zone) return agent !== undefined;
    this.logger.info({ agentId, from: agent.identity.zone, to: zone }, "agent zone changed");
    agent.identity = { ...agent.identity, zone };
    this.blobs.rezone(agentId, agent, zone);
    return true;
  }

  /**
   * Ends `agentId`'s session from the tracker's side (membership says it is gone): drops everything it
   * announced and releases its grants at once. Returns whether there was a session.
   */
  disconnect(agentId: string): boolean {
    return this.drop(agentId, "dropped");
  }

  /**
   * Holders of `digest` ranked for `agentId`, the piece hashes known so far and the origin decision, all
   * of one claim (BlobClaims.choose): not of a size other than `expectedSize` (what the asker knows from
   * a manifest or the origin), not one whose every holder the asker `excluded`. Throws
   * ERR_TRACKER_NOT_REGISTERED for an agent without a session.
   */
  lookup(
    agentId: string,
    digest: Digest,
    wantOriginGrant: boolean,
    access: LookupAccess = {},
    excluded: readonly string[] = [],
    expectedSize?: number,
  ): LookupResult {
    const asker = this.agents.require(agentId);
    checkLookupAccess(asker, access);
    const excludedSet = new Set(excluded);
    const blob = this.blobs.claimsOf(digest)?.choose(agentId, excludedSet, expectedSize, this.grants.granteeOf(digest));
    // Rebuilding after an empty start: a blob without a complete holder may only not be re-announced yet.
    // And an agent already fetching several blobs from the origin leaves the next one to another asker for a
    // moment (OriginGrants.deferral). Either way the asker is told to ask again.
    const noCopy = blob === undefined || blob.holders.completeCount === 0;
    const rebuildingMs = noCopy ? this.grace.retryAfterMs(digest) : 0;
    const retryAfterMs = rebuildingMs > 0 || !wantOriginGrant || !noCopy ? rebuildingMs : this.grants.deferral(agentId, digest);
    const granted = wantOriginGrant && retryAfterMs === 0 && this.grants.tryGrant(agentId, digest, blob, excludedSet);
    const holders =
      blob?.holders.best(
        asker.identity,
        this.maxLookupHolders,
        this.agents.onNode(asker.identity.nodeName),
        (id) => this.agents.get(id),
        this.random,
      ) ?? [];
    this.metrics?.lookups.inc({ result: granted ? "granted" : holders.length > 0 ? "holders" : retryAfterMs > 0 ? "retry" : "none" });
    // Interest is implied by the lookup: an agent that takes notices hears when the blob changes, until it holds it.
    if (asker.onNotice !== undefined) {
      if (this.holdsComplete(agentId, digest)) this.watchers.unwatch(agentId, digest);
      else
        this.watchers.watch(agentId, digest, {
          claim: blob,
          excluded: excludedSet,
          expectedSize,
          revision: blob?.revision ?? 0,
          crowded: holders.length >= this.maxLookupHolders,
          hashesTold: blob?.knownHashes ?? 0,
          stale: false,
        });
    }
    return {
      size: blob?.size ?? 0,
      pieceSize: blob?.pieceSize ?? 0,
      holders,
      pieceHashes: blob === undefined ? [] : this.blobs.answer(blob),
      origin: { granted, granteeAgentId: this.grants.granteeOf(digest) },
      askerZone: asker.identity.zone,
      ...(retryAfterMs > 0 ? { retryAfterMs } : {}),
    };
  }

  /** (agent, blob) pairs notices are sent for (blob-watchers.ts). */
  get watchCount(): number {
    return this.watchers.size;
  }

  /** Sessions open now. */
  get sessionCount(): number {
    return this.agents.size;
  }

  /** Sessions that registered to re-announce and still owe announces (0 outside a rebuild). */
  get resumingSessions(): number {
    return this.grace.pendingSessions;
  }

  snapshot(): TrackerSnapshot {
    return {
      agents: [...this.agents.values()].map((a) => ({ identity: a.identity, activeUploads: a.activeUploads, blobs: [...a.blobs] })),
      blobs: this.blobs.snapshot(),
      grants: this.grants.snapshot(),
    };
  }

  /** @internal Session handles call in here; true while `token` is the agent's current session. */
  isCurrent(agentId: string, token: object): boolean {
    return this.agents.get(agentId)?.token === token;
  }

  /** @internal Ends a session on its own request: no onClose callback. */
  closeSession(agentId: string, token: object): void {
    if (this.isCurrent(agentId, token)) this.drop(agentId, undefined);
  }

  private drop(agentId: string, reason: SessionCloseReason | undefined): boolean {
    // Removed first: observers learn of the disconnect, not of every blob it held going away.
    const agent = this.agents.remove(agentId);
    if (agent === undefined) return false;
    this.grace.dropped(agentId);
    for (const digest of [...agent.blobs]) this.forget(agent, digest);
    this.tags.forget(agentId);
    this.watchers.forget(agentId);
    for (const digest of this.grants.releaseAll(agentId)) this.watchers.changed(digest);
    this.logger.info({ agentId, reason: reason ?? "closed" }, "agent disconnected");
    this.observers.emit({ type: "disconnected", agentId });
    if (reason !== undefined) this.agents.ended(agentId, agent, reason);
    return true;
  }

  /** Forgets `agent`'s announcement of `digest`; observers hear of a complete copy going while the agent's session lasts. */
  private forget(agent: AgentRecord, digest: Digest): void {
    const agentId = agent.identity.agentId;
    const wasComplete = this.blobs.forget(agent, digest);
    if (wasComplete && this.agents.get(agentId) === agent) this.observers.emit({ type: "holding", agentId, digest, complete: false });
  }

  /** Runs a validation, counting what it rejects. */
  private guard<T>(validate: () => T): T {
    try {
      return validate();
    } catch (error) {
      this.metrics?.requestsRejected.inc({ reason: "invalid" });
      throw error;
    }
  }
}
