import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { WorkloadIdentity } from "../identity/index.js";
import type { ControllerMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import { PIECE_HASH_BYTES } from "../piece/index.js";
import { BlobClaims, type Claim, joinHashes, NO_HASHES } from "./blob-claims.js";
import { BlobWatchers, type RoundChanges, type Scheduler } from "./blob-watchers.js";
import { TrackerError } from "./errors.js";
import { type Membership, OpenMembership } from "./membership.js";
import type { AgentCommand, PrefetchReport } from "./prefetch.js";
import { validatePrefetchReport } from "./prefetch.js";
import { RebuildGrace } from "./rebuild-grace.js";
import { TagDirectory } from "./tag-directory.js";
import { changeFor, type WatchView } from "./notice-delta.js";
import type { AgentIdentity, BlobAnnouncement, BlobChange, LookupResult, TagKey, TagRecord } from "./tracker.js";
import { validateActiveUploads, validateAnnouncement, validateIdentity, validateTagKey, validateTagRecord } from "./validation.js";

/** A grantee that announces no new pieces for this long loses the grant to the next asker. */
export const DEFAULT_GRANT_STALL_TIMEOUT_MS = 10_000;
/** How long a grant released by a disconnect is remembered, so the next grant counts as a move. */
const RELEASED_GRANT_MEMORY_MS = 60_000;
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

/** Why the tracker ended a session by itself. */
export type SessionCloseReason = "superseded" | "dropped";

export interface RegisterOptions {
  /** Admission rule; open when absent. */
  readonly membership?: Membership;
  /** The host the session comes from (gRPC), handed to the membership. */
  readonly remoteAddress?: string;
  /** What the agent's TLS certificate says it is (handed to the membership). */
  readonly peer?: WorkloadIdentity;
  /**
   * The certificate's identity (its URI) the session is bound to: a session of another principal cannot
   * take over this agent id, and lookups in its name must come from the same principal.
   */
  readonly principal?: string;
  /** Called once if the tracker ends the session itself: the agent re-registered elsewhere, or disconnect(agentId). */
  readonly onClose?: (reason: SessionCloseReason) => void;
  /** Delivers commands (prefetch assignments) to the agent; a session without it cannot take any. */
  readonly onCommand?: (command: AgentCommand) => void;
  /** Blobs the agent is about to re-announce (it lost its previous session); 0 on a first start. */
  readonly resumeBlobs?: number;
  /**
   * Tells the agent a blob it watches changed (BlobChanged), with what changed when that can be told
   * exactly (else undefined: look it up); returns false when the notice was dropped (its stream is not
   * draining). A session without it watches nothing (agents before notices).
   */
  readonly onNotice?: (digest: Digest, change: BlobChange | undefined) => boolean;
}

/**
 * What changed in the tracker, for observers such as the prefetch reconciler. `holding` fires only when
 * an agent's copy of a blob becomes complete or goes away, not for every piece.
 */
export type TrackerEvent =
  | { readonly type: "registered"; readonly identity: AgentIdentity }
  | { readonly type: "disconnected"; readonly agentId: string }
  | { readonly type: "holding"; readonly agentId: string; readonly digest: Digest; readonly complete: boolean }
  | { readonly type: "prefetch-report"; readonly agentId: string; readonly report: PrefetchReport };

export interface LookupAccess {
  readonly membership?: Membership;
  readonly remoteAddress?: string;
  readonly peer?: WorkloadIdentity;
  /** The caller's certificate identity; must be the one the agent's session is bound to. */
  readonly principal?: string;
}

/** One registered session. Its methods throw ERR_TRACKER_CLOSED once the session is no longer current. */
export interface TrackerSession {
  readonly identity: AgentIdentity;
  readonly open: boolean;
  announce(announcement: BlobAnnouncement): void;
  withdraw(digest: Digest): void;
  heartbeat(activeUploads: number): void;
  publishTag(record: TagRecord): void;
  prefetchReport(report: PrefetchReport): void;
  /** Ends the session: everything it announced is dropped and its grants released. Idempotent. */
  close(): void;
}

export interface TrackerSnapshot {
  readonly agents: readonly { readonly identity: AgentIdentity; readonly activeUploads: number; readonly blobs: readonly Digest[] }[];
  readonly blobs: readonly {
    readonly digest: Digest;
    readonly size: number;
    readonly pieceSize: number;
    readonly knownHashes: number;
    readonly holders: readonly { readonly agentId: string; readonly complete: boolean; readonly heldPieces: number }[];
  }[];
  readonly grants: readonly {
    readonly digest: Digest;
    readonly agentId: string;
    readonly grantedAtMs: number;
    readonly progressAtMs: number;
  }[];
}

/**
 * What one agent may make the tracker hold, in bytes of controller memory: every blob it announces costs
 * a holder entry; a blob record it creates as the first announcer costs the record and its packed piece
 * hashes (a claim about the blob, blob-claims.ts). The costs are heap figures of these structures measured
 * on Node 24 (1,779 bytes for a blob of one piece, holder and record), rounded up. 32 MiB is far
 * above an honest node (a few thousand blobs; 18,000 small blobs or 800,000 pieces created first) and
 * bounds what one misbehaving session makes the tracker hold (npm run bench:tracker-budget).
 */
export const MEMORY_BUDGET_PER_AGENT_BYTES = 32 * 1024 * 1024;
export const HOLDER_COST_BYTES = 256;
export const RECORD_COST_BYTES = 1_536;
export const PIECE_COST_BYTES = 40;
/**
 * Pieces of the hash lists lookups answer with, cached for all blobs together (a list costs ~130 bytes
 * a piece, its wire form as much again): enough for every blob a cluster pulls at once.
 */
const ANSWER_CACHE_PIECES = 131_072;

interface AgentRecord {
  /** As the membership identified it; updateZone() may change the zone. */
  identity: AgentIdentity;
  readonly token: object;
  /** The certificate identity the session is bound to (undefined without TLS). */
  readonly principal: string | undefined;
  readonly onClose: ((reason: SessionCloseReason) => void) | undefined;
  readonly onCommand: ((command: AgentCommand) => void) | undefined;
  readonly onNotice: ((digest: Digest, change: BlobChange | undefined) => boolean) | undefined;
  activeUploads: number;
  readonly blobs: Set<Digest>;
  /** Controller memory charged to this agent (MEMORY_BUDGET_PER_AGENT_BYTES): its holder entries and the records it created. */
  chargedBytes: number;
}

interface Grant {
  readonly agentId: string;
  readonly grantedAtMs: number;
  progressAtMs: number;
  heldPieces: number;
}

/**
 * The tracker's state: sessions, who holds which pieces of which blob, piece hashes and origin grants.
 * Owned by this one object and changed only through its methods, all synchronous, so no interleaving
 * can leave it half-updated (Kraken's scheduler keeps its state the same way). Stalled grants are
 * detected lazily, on the next lookup that wants one, so there are no timers.
 */
export class MemoryTracker {
  readonly id: string;
  private readonly logger: Logger;
  private readonly metrics: ControllerMetrics | undefined;
  private readonly stallTimeoutMs: number;
  private readonly now: () => number;
  private readonly agents = new Map<string, AgentRecord>();
  /** Node name → agents registered from it (the "same node" ranking tier; usually one). */
  private readonly agentsByNode = new Map<string, Set<string>>();
  private readonly maxLookupHolders: number;
  private readonly random: () => number;
  /** Per digest, the claims agents made about it (blob-claims.ts): kept apart while they disagree. */
  private readonly blobs = new Map<Digest, BlobClaims<AgentRecord>>();
  private readonly grants = new Map<Digest, Grant>();
  /** Hash lists lookups answer with, least recently used first; see answer(). */
  private readonly answers = new Map<Claim<AgentRecord>, readonly (Uint8Array | undefined)[]>();
  private answeredPieces = 0;
  /** Grants released by a disconnect: who held them and when, so the next grant can count as a move. */
  private readonly released = new Map<Digest, { readonly agentId: string; readonly atMs: number }>();
  /** Tag → digest as agents resolved them upstream: pulls by tag still resolve while an upstream is down. */
  private readonly tags = new TagDirectory();
  private readonly listeners = new Set<(event: TrackerEvent) => void>();
  private readonly grace: RebuildGrace;
  /** The agents of a node, for BlobClaims (one function shared by every blob). */
  private readonly sameNode = (nodeName: string): Iterable<string> => this.agentsByNode.get(nodeName) ?? [];
  /** Who waits for news of which blob, and the notices that tell them. */
  private readonly watchers: BlobWatchers<WatchView<AgentRecord>>;
  private readonly noticeDeltas: boolean;

  constructor(options: MemoryTrackerOptions) {
    this.id = options.id ?? randomUUID();
    this.logger = options.logger;
    this.metrics = options.metrics;
    this.stallTimeoutMs = options.grantStallTimeoutMs ?? DEFAULT_GRANT_STALL_TIMEOUT_MS;
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
    this.noticeDeltas = options.noticeDeltas ?? true;
    this.watchers = new BlobWatchers<WatchView<AgentRecord>>({
      now: this.now,
      schedule: options.schedule ?? scheduleUnref,
      ...(options.noticeIntervalMs === undefined ? {} : { intervalMs: options.noticeIntervalMs }),
      ...(options.noticesPerBlobPerSecond === undefined ? {} : { perBlobPerSecond: options.noticesPerBlobPerSecond }),
      deliver: (agentId, digest, view, changes) => this.notify(agentId, digest, view, changes),
      ...(metrics === undefined
        ? {}
        : {
            onNotice: (delivered: boolean) => {
              (delivered ? metrics.noticesSent : metrics.noticesDropped).inc();
            },
            onWatches: (count: number) => {
              metrics.watches.set(count);
            },
          }),
    });
    if (!(this.maxLookupHolders >= 1)) throw new RangeError(`maxLookupHolders must be at least 1, got ${this.maxLookupHolders}`);
    if (!(this.stallTimeoutMs > 0)) throw new RangeError(`grantStallTimeoutMs must be positive, got ${this.stallTimeoutMs}`);
  }

  /**
   * Starts a session. Throws ERR_TRACKER_PERMISSION_DENIED when the membership refuses the agent. A
   * session already open under the same agent id is superseded: its state is dropped first, because
   * the agent re-announces its whole inventory on every new session.
   */
  register(identity: AgentIdentity, options: RegisterOptions = {}): TrackerSession {
    const valid = this.guard(() => validateIdentity(identity));
    let verdict = (options.membership ?? OPEN).admits(valid, options.remoteAddress, options.peer);
    const holder = this.agents.get(valid.agentId);
    if (verdict === true && holder !== undefined && holder.principal !== options.principal) {
      verdict = `agent id ${valid.agentId} belongs to a session of another workload (${holder.principal ?? "without a certificate"})`;
    }
    if (verdict !== true) {
      this.metrics?.sessionsRefused.inc();
      this.logger.warn(
        {
          agentId: valid.agentId,
          nodeName: valid.nodeName,
          remoteAddress: options.remoteAddress,
          principal: options.principal,
          reason: verdict,
        },
        "session refused",
      );
      throw new TrackerError("ERR_TRACKER_PERMISSION_DENIED", verdict);
    }
    const recorded = options.membership?.identify?.(valid, options.remoteAddress) ?? valid;
    if (this.agents.has(valid.agentId)) this.drop(valid.agentId, "superseded");
    this.grace.registered(valid.agentId, Math.max(0, Math.floor(options.resumeBlobs ?? 0)), this.agents.size);
    const token = {};
    this.agents.set(valid.agentId, {
      identity: recorded,
      token,
      principal: options.principal,
      onClose: options.onClose,
      onCommand: options.onCommand,
      onNotice: options.onNotice,
      activeUploads: 0,
      blobs: new Set(),
      chargedBytes: 0,
    });
    let onNode = this.agentsByNode.get(recorded.nodeName);
    if (onNode === undefined) {
      onNode = new Set();
      this.agentsByNode.set(recorded.nodeName, onNode);
    }
    onNode.add(valid.agentId);
    this.metrics?.agents.set(this.agents.size);
    this.logger.info(
      { agentId: valid.agentId, nodeName: recorded.nodeName, zone: recorded.zone, peerAddress: recorded.peerAddress },
      "agent registered",
    );
    this.emit({ type: "registered", identity: recorded });
    return new Session(this, recorded, token);
  }

  /**
   * Records what `agentId` holds of a blob, replacing its earlier announcement of that digest. The
   * announcement joins the claim it agrees with or starts its own (blob-claims.ts): what one agent says
   * never overwrites what others said. A complete copy that makes its claim corroborated gets the claims
   * it contradicts discarded, and their complete holders excluded for the blob.
   */
  announce(agentId: string, announcement: BlobAnnouncement): void {
    const agent = this.agent(agentId);
    this.grace.announced(agentId);
    const a = this.guard(() => validateAnnouncement(announcement));
    let entry = this.blobs.get(a.digest);
    if (entry?.isExcluded(agentId) === true) {
      this.metrics?.requestsRejected.inc({ reason: "excluded" });
      throw new TrackerError(
        "ERR_TRACKER_INVALID_ARGUMENT",
        `announce of ${a.digest} by ${agentId} refused: it announced a complete copy that complete copies on other nodes contradict`,
      );
    }
    const placement = entry === undefined ? ({ kind: "create", carried: NO_HASHES } as const) : entry.place(agentId, a);
    if (placement.kind === "refuse") {
      this.metrics?.requestsRejected.inc({ reason: "conflict" });
      throw new TrackerError(
        "ERR_TRACKER_INVALID_ARGUMENT",
        `announce of ${a.digest} by ${agentId} (size ${a.size}, piece size ${a.pieceSize}) agrees with no claim: ${placement.reason}`,
      );
    }
    const cost = (agent.blobs.has(a.digest) ? 0 : HOLDER_COST_BYTES) + (placement.kind === "create" ? recordCost(a.pieceCount) : 0);
    if (agent.chargedBytes + cost > MEMORY_BUDGET_PER_AGENT_BYTES) {
      throw this.exhausted(
        agentId,
        `agent ${agentId} is over its tracker memory budget: ${agent.blobs.size} blobs announced, ${agent.chargedBytes} + ${cost} bytes ` +
          `charged (at most ${MEMORY_BUDGET_PER_AGENT_BYTES})`,
      );
    }
    agent.chargedBytes += cost;
    if (entry === undefined) {
      entry = new BlobClaims(this.sameNode);
      this.blobs.set(a.digest, entry);
      this.metrics?.blobs.set(this.blobs.size);
    }
    const before = entry.claimOf(agentId);
    const previous = before?.holders.get(agentId);
    const wasComplete = previous?.complete === true;
    const claim = placement.kind === "create" ? entry.create(a, agent) : placement.claim;
    const { added, overwritten } = entry.record(claim, joinHashes(placement.carried, a.hashes));
    if (added + overwritten > 0) this.forgetAnswer(claim);
    if (before !== undefined && before !== claim && before.holders.size > 1) {
      // It contradicts what other members said: kept apart. (The only member changing its mind is no conflict.)
      this.metrics?.pieceHashConflicts.inc();
      this.logger.warn(
        { agentId, digest: a.digest, size: a.size, pieceSize: a.pieceSize, claims: entry.claims.length },
        "announce contradicts the agent's claim about the blob; kept apart from it",
      );
    } else if (overwritten > 0) {
      this.metrics?.pieceHashConflicts.inc(overwritten);
      this.logger.warn({ agentId, digest: a.digest, changed: overwritten }, "the only holder of a claim changed piece hashes it announced");
    }
    const emptied = entry.hold(
      agentId,
      agent.identity.nodeName,
      agent.identity.zone,
      claim,
      a.complete ? claim.completeHolding : { complete: false, bitmap: a.bitmap, heldPieces: a.heldPieces },
    );
    if (emptied !== undefined) this.dropClaim(emptied);
    agent.blobs.add(a.digest);
    if (wasComplete !== a.complete) this.emit({ type: "holding", agentId, digest: a.digest, complete: a.complete });
    const grant = this.grants.get(a.digest);
    if (grant?.agentId === agentId) {
      if (a.complete) {
        this.grants.delete(a.digest);
        entry.lastGrantee = agentId;
        this.logger.debug({ agentId, digest: a.digest }, "origin grant released: blob complete");
      } else if (a.heldPieces > grant.heldPieces) {
        grant.heldPieces = a.heldPieces;
        grant.progressAtMs = this.now();
      }
    }
    if (a.complete) {
      this.released.delete(a.digest);
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
      if (this.grants.get(digest)?.agentId === agentId) this.grants.delete(digest);
    }
  }

  /** Forgets `agentId`'s announcement of a blob and releases its grant for it. Unknown digests are ignored. */
  withdraw(agentId: string, digest: Digest): void {
    const agent = this.agent(agentId);
    this.forget(agent, digest);
    this.watchers.unwatch(agentId, digest);
    if (this.grants.get(digest)?.agentId === agentId) {
      this.grants.delete(digest);
      this.logger.debug({ agentId, digest }, "origin grant released: withdrawn");
      // Whoever waits for the grantee's pieces may now be granted the fetch itself.
      this.watchers.changed(digest);
    }
  }

  /** An agent's progress on a prefetch assignment: handed to the observers, not kept. */
  prefetchReport(agentId: string, report: PrefetchReport): void {
    this.agent(agentId);
    this.emit({ type: "prefetch-report", agentId, report: this.guard(() => validatePrefetchReport(report)) });
  }

  /**
   * Sends a command to the agent's session. False when the agent has no session or its session cannot
   * take commands (in-process sessions without a handler).
   */
  sendCommand(agentId: string, command: AgentCommand): boolean {
    const agent = this.agents.get(agentId);
    if (agent?.onCommand === undefined) return false;
    try {
      agent.onCommand(command);
      return true;
    } catch (error: unknown) {
      this.logger.warn({ err: error, agentId }, "command not delivered");
      return false;
    }
  }

  /** Whether the agent has announced a complete copy of the blob. */
  holdsComplete(agentId: string, digest: Digest): boolean {
    return this.blobs.get(digest)?.claimOf(agentId)?.holders.get(agentId)?.complete === true;
  }

  /** Identities of the agents with a live session. */
  agentIdentities(): AgentIdentity[] {
    return [...this.agents.values()].map((a) => a.identity);
  }

  /** Observes registrations, disconnects, complete copies and prefetch reports; returns the unsubscribe function. */
  subscribe(listener: (event: TrackerEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  heartbeat(agentId: string, activeUploads: number): void {
    const agent = this.agent(agentId);
    agent.activeUploads = this.guard(() => validateActiveUploads(activeUploads));
  }

  /** Records which digest `agentId` resolved a tag to; an older record than its known one is ignored. */
  publishTag(agentId: string, record: TagRecord): void {
    const agent = this.agent(agentId);
    this.tags.record(
      agentId,
      agent.identity.nodeName,
      this.guard(() => validateTagRecord(record)),
      this.now(),
    );
  }

  /** The digest most nodes published for a tag (TagDirectory.resolve). Same access rules as lookup. */
  resolveTag(agentId: string, key: TagKey, access: LookupAccess = {}): TagRecord | undefined {
    const asker = this.agent(agentId);
    this.checkAccess(asker, access);
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
    for (const digest of agent.blobs) this.blobs.get(digest)?.claimOf(agentId)?.holders.rezone(agentId, zone);
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
    const asker = this.agent(agentId);
    this.checkAccess(asker, access);
    const excludedSet = new Set(excluded);
    const blob = this.blobs.get(digest)?.choose(agentId, excludedSet, expectedSize, this.grants.get(digest)?.agentId);
    // Rebuilding after an empty start: a blob without a complete holder may only not be re-announced yet.
    const retryAfterMs = blob === undefined || blob.holders.completeCount === 0 ? this.grace.retryAfterMs(digest) : 0;
    const granted = wantOriginGrant && retryAfterMs === 0 && this.tryGrant(agentId, digest, blob, excludedSet);
    const holders =
      blob?.holders.best(
        asker.identity,
        this.maxLookupHolders,
        this.agentsByNode.get(asker.identity.nodeName) ?? [],
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
      pieceHashes: blob === undefined ? [] : this.answer(blob),
      origin: { granted, granteeAgentId: this.grants.get(digest)?.agentId },
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
      blobs: [...this.blobs].flatMap(([digest, entry]) =>
        entry.claims.map((b) => ({
          digest,
          size: b.size,
          pieceSize: b.pieceSize,
          knownHashes: b.knownHashes,
          holders: [...b.holders.holdings()].map(([agentId, h]) => ({ agentId, complete: h.complete, heldPieces: h.heldPieces })),
        })),
      ),
      grants: [...this.grants].map(([digest, g]) => ({
        digest,
        agentId: g.agentId,
        grantedAtMs: g.grantedAtMs,
        progressAtMs: g.progressAtMs,
      })),
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

  /** The grant decision; true when `agentId` holds the grant after it. */
  private tryGrant(agentId: string, digest: Digest, blob: Claim<AgentRecord> | undefined, excluded: ReadonlySet<string>): boolean {
    const now = this.now();
    const current = this.grants.get(digest);
    if (current?.agentId === agentId) return true;
    // A complete copy elsewhere means the peers can supply it, unless the asker found that holder bad.
    // Counted, not searched: a popular blob has thousands of holders and every asker wants a grant.
    if (blob !== undefined && blob.holders.completeCount > 0) {
      let unusable = blob.holders.get(agentId)?.complete === true ? 1 : 0;
      for (const id of excluded) if (id !== agentId && blob.holders.get(id)?.complete === true) unusable++;
      if (blob.holders.completeCount > unusable) return false;
    }
    if (current !== undefined && now - current.progressAtMs < this.stallTimeoutMs) return false;
    const heldPieces = blob?.holders.get(agentId)?.heldPieces ?? 0;
    this.grants.set(digest, { agentId, grantedAtMs: now, progressAtMs: now, heldPieces });
    this.metrics?.grants.inc();
    const released = this.released.get(digest);
    this.released.delete(digest);
    if (current !== undefined) {
      this.metrics?.grantMoves.inc({ reason: "stalled" });
      this.logger.info(
        { digest, from: current.agentId, to: agentId, stalledMs: now - current.progressAtMs },
        "origin grant moved: stalled",
      );
    } else if (released !== undefined && released.agentId !== agentId && now - released.atMs < RELEASED_GRANT_MEMORY_MS) {
      this.metrics?.grantMoves.inc({ reason: "disconnected" });
      this.logger.info({ digest, from: released.agentId, to: agentId }, "origin grant moved: previous grantee disconnected");
    } else {
      this.logger.debug({ digest, agentId }, "origin grant");
    }
    return true;
  }

  private drop(agentId: string, reason: SessionCloseReason | undefined): boolean {
    const agent = this.agents.get(agentId);
    if (agent === undefined) return false;
    // Removed first: observers learn of the disconnect, not of every blob it held going away.
    this.agents.delete(agentId);
    this.grace.dropped(agentId);
    for (const digest of [...agent.blobs]) this.forget(agent, digest);
    this.tags.forget(agentId);
    this.watchers.forget(agentId);
    const now = this.now();
    for (const [digest, grant] of this.grants) {
      if (grant.agentId !== agentId) continue;
      this.grants.delete(digest);
      this.released.set(digest, { agentId, atMs: now });
      this.watchers.changed(digest);
    }
    for (const [digest, r] of this.released) if (now - r.atMs >= RELEASED_GRANT_MEMORY_MS) this.released.delete(digest);
    const onNode = this.agentsByNode.get(agent.identity.nodeName);
    onNode?.delete(agentId);
    if (onNode?.size === 0) this.agentsByNode.delete(agent.identity.nodeName);
    this.metrics?.agents.set(this.agents.size);
    this.logger.info({ agentId, reason: reason ?? "closed" }, "agent disconnected");
    this.emit({ type: "disconnected", agentId });
    if (reason !== undefined && agent.onClose !== undefined) {
      try {
        agent.onClose(reason);
      } catch (error: unknown) {
        this.logger.error({ err: error, agentId }, "session close callback failed");
      }
    }
    return true;
  }

  private forget(agent: AgentRecord, digest: Digest): void {
    if (agent.blobs.delete(digest)) agent.chargedBytes -= HOLDER_COST_BYTES;
    const entry = this.blobs.get(digest);
    if (entry === undefined) return;
    const agentId = agent.identity.agentId;
    const wasComplete = entry.claimOf(agentId)?.holders.get(agentId)?.complete === true;
    const emptied = entry.release(agentId, agent.identity.nodeName);
    if (emptied !== undefined) this.dropClaim(emptied);
    if (wasComplete && this.agents.get(agentId) === agent) this.emit({ type: "holding", agentId, digest, complete: false });
    if (entry.holderCount === 0) {
      this.blobs.delete(digest);
      this.metrics?.blobs.set(this.blobs.size);
    }
  }

  /** A claim nobody holds any more: its hash storage is given back to the agent whose announce created it. */
  private dropClaim(claim: Claim<AgentRecord>): void {
    this.forgetAnswer(claim);
    claim.creator.chargedBytes -= recordCost(claim.pieceCount);
  }

  /**
   * The hash list lookups of `blob` answer with: one shared list (callers only read it) per blob looked
   * up recently, at most ANSWER_CACHE_PIECES pieces for all blobs together, least recently used first out.
   */
  private answer(blob: Claim<AgentRecord>): readonly (Uint8Array | undefined)[] {
    let list = this.answers.get(blob);
    if (list !== undefined) {
      this.answers.delete(blob);
      this.answers.set(blob, list);
      return list;
    }
    list = Array.from({ length: blob.pieceCount }, (_, i) =>
      ((blob.knownBits[i >> 3] ?? 0) & (1 << (i & 7))) === 0
        ? undefined
        : blob.hashBytes.subarray(i * PIECE_HASH_BYTES, (i + 1) * PIECE_HASH_BYTES),
    );
    this.answers.set(blob, list);
    this.answeredPieces += list.length;
    for (const [cached, cachedList] of this.answers) {
      if (this.answeredPieces <= ANSWER_CACHE_PIECES || cached === blob) break;
      this.answers.delete(cached);
      this.answeredPieces -= cachedList.length;
    }
    return list;
  }

  private forgetAnswer(blob: Claim<AgentRecord>): void {
    const list = this.answers.get(blob);
    if (list === undefined) return;
    this.answers.delete(blob);
    this.answeredPieces -= list.length;
  }

  /** Hands a notice to the agent's session, with the change when it can be told exactly; false when it was dropped. */
  private notify(agentId: string, digest: Digest, view: WatchView<AgentRecord>, changes: RoundChanges): boolean {
    const agent = this.agents.get(agentId);
    if (agent?.onNotice === undefined) return false;
    const change = this.noticeDeltas
      ? changeFor({
          watcher: agentId,
          claims: this.blobs.get(digest),
          grantee: this.grants.get(digest)?.agentId,
          view,
          changes,
          maxLookupHolders: this.maxLookupHolders,
          agent: (id) => this.agents.get(id),
        })
      : undefined;
    let delivered: boolean;
    try {
      delivered = agent.onNotice(digest, change);
    } catch (error: unknown) {
      this.logger.warn({ err: error, agentId }, "notice not delivered");
      delivered = false;
    }
    if (!delivered) view.stale = true;
    else if (change !== undefined) {
      view.hashesTold = view.claim?.knownHashes ?? 0;
      this.metrics?.noticeDeltas.inc();
    }
    return delivered;
  }

  private exhausted(agentId: string, message: string): TrackerError {
    this.metrics?.requestsRejected.inc({ reason: "exhausted" });
    this.logger.warn({ agentId }, message);
    return new TrackerError("ERR_TRACKER_RESOURCE_EXHAUSTED", message);
  }

  private agent(agentId: string): AgentRecord {
    const agent = this.agents.get(agentId);
    if (agent !== undefined) return agent;
    this.metrics?.requestsRejected.inc({ reason: "not_registered" });
    throw new TrackerError("ERR_TRACKER_NOT_REGISTERED", `agent ${JSON.stringify(agentId.slice(0, 128))} has no session with the tracker`);
  }

  /** Observers run synchronously after the change; one that throws is logged and the others still run. */
  private emit(event: TrackerEvent): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (error: unknown) {
        this.logger.error({ err: error, event: event.type }, "tracker observer failed");
      }
    }
  }

  /** Lookups in an agent's name: the membership still admits it, and the caller is the session's principal. */
  private checkAccess(asker: AgentRecord, access: LookupAccess): void {
    if (access.principal !== undefined && access.principal !== asker.principal) {
      throw new TrackerError(
        "ERR_TRACKER_PERMISSION_DENIED",
        `agent ${asker.identity.agentId} has a session of another workload than ${access.principal}`,
      );
    }
    const verdict = (access.membership ?? OPEN).admits(asker.identity, access.remoteAddress, access.peer);
    if (verdict !== true) throw new TrackerError("ERR_TRACKER_PERMISSION_DENIED", verdict);
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

const OPEN = new OpenMembership();

/** setTimeout that keeps no process alive (a round of notices is never worth waiting for at exit). */
function scheduleUnref(task: () => void, delayMs: number): () => void {
  const timer = setTimeout(task, delayMs);
  timer.unref();
  return () => {
    clearTimeout(timer);
  };
}

class Session implements TrackerSession {
  constructor(
    private readonly tracker: MemoryTracker,
    readonly identity: AgentIdentity,
    private readonly token: object,
  ) {}

  get open(): boolean {
    return this.tracker.isCurrent(this.identity.agentId, this.token);
  }

  announce(announcement: BlobAnnouncement): void {
    this.tracker.announce(this.current(), announcement);
  }

  withdraw(digest: Digest): void {
    this.tracker.withdraw(this.current(), digest);
  }

  heartbeat(activeUploads: number): void {
    this.tracker.heartbeat(this.current(), activeUploads);
  }

  publishTag(record: TagRecord): void {
    this.tracker.publishTag(this.current(), record);
  }

  prefetchReport(report: PrefetchReport): void {
    this.tracker.prefetchReport(this.current(), report);
  }

  close(): void {
    this.tracker.closeSession(this.identity.agentId, this.token);
  }

  private current(): string {
    if (!this.open) throw new TrackerError("ERR_TRACKER_CLOSED", `session of agent ${this.identity.agentId} has ended`);
    return this.identity.agentId;
  }
}

/** What a blob record of `pieceCount` pieces costs the tracker, charged to the agent that created it. */
function recordCost(pieceCount: number): number {
  return RECORD_COST_BYTES + pieceCount * PIECE_COST_BYTES;
}
