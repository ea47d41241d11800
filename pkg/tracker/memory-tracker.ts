import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { WorkloadIdentity } from "../identity/index.js";
import type { ControllerMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import { TrackerError } from "./errors.js";
import { rankHolders } from "./holder-ranking.js";
import { type Membership, OpenMembership } from "./membership.js";
import { TagDirectory } from "./tag-directory.js";
import type { AgentIdentity, BlobAnnouncement, HolderInfo, LookupResult, TagKey, TagRecord } from "./tracker.js";
import { validateActiveUploads, validateAnnouncement, validateIdentity, validateTagKey, validateTagRecord } from "./validation.js";

/** A grantee that announces no new pieces for this long loses the grant to the next asker. */
export const DEFAULT_GRANT_STALL_TIMEOUT_MS = 10_000;
/** How long a grant released by a disconnect is remembered, so the next grant counts as a move. */
const RELEASED_GRANT_MEMORY_MS = 60_000;

export interface MemoryTrackerOptions {
  readonly logger: Logger;
  readonly metrics?: ControllerMetrics;
  readonly grantStallTimeoutMs?: number;
  /** Milliseconds clock; injectable for tests. */
  readonly now?: () => number;
  /** Identifies this tracker's state in `registered`; random by default. */
  readonly id?: string;
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
}

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
  readonly grants: readonly { readonly digest: Digest; readonly agentId: string; readonly grantedAtMs: number; readonly progressAtMs: number }[];
}

interface AgentRecord {
  /** As the membership identified it; updateZone() may change the zone. */
  identity: AgentIdentity;
  readonly token: object;
  /** The certificate identity the session is bound to (undefined without TLS). */
  readonly principal: string | undefined;
  readonly onClose: ((reason: SessionCloseReason) => void) | undefined;
  activeUploads: number;
  readonly blobs: Set<Digest>;
}

interface Holding {
  readonly complete: boolean;
  readonly bitmap: Uint8Array | undefined;
  readonly heldPieces: number;
}

interface BlobRecord {
  readonly size: number;
  readonly pieceSize: number;
  readonly pieceCount: number;
  /** Index-aligned; the first hash announced for a piece wins. */
  readonly hashes: (Uint8Array | undefined)[];
  knownHashes: number;
  readonly holders: Map<string, Holding>;
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
  private readonly blobs = new Map<Digest, BlobRecord>();
  private readonly grants = new Map<Digest, Grant>();
  /** Grants released by a disconnect: who held them and when, so the next grant can count as a move. */
  private readonly released = new Map<Digest, { readonly agentId: string; readonly atMs: number }>();
  /** Tag → digest as agents resolved them upstream: pulls by tag still resolve while an upstream is down. */
  private readonly tags = new TagDirectory();

  constructor(options: MemoryTrackerOptions) {
    this.id = options.id ?? randomUUID();
    this.logger = options.logger;
    this.metrics = options.metrics;
    this.stallTimeoutMs = options.grantStallTimeoutMs ?? DEFAULT_GRANT_STALL_TIMEOUT_MS;
    this.now = options.now ?? Date.now;
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
      this.logger.warn({ agentId: valid.agentId, nodeName: valid.nodeName, remoteAddress: options.remoteAddress, principal: options.principal, reason: verdict }, "session refused");
      throw new TrackerError("ERR_TRACKER_PERMISSION_DENIED", verdict);
    }
    const recorded = options.membership?.identify?.(valid, options.remoteAddress) ?? valid;
    if (this.agents.has(valid.agentId)) this.drop(valid.agentId, "superseded");
    const token = {};
    this.agents.set(valid.agentId, { identity: recorded, token, principal: options.principal, onClose: options.onClose, activeUploads: 0, blobs: new Set() });
    this.metrics?.agents.set(this.agents.size);
    this.logger.info({ agentId: valid.agentId, nodeName: recorded.nodeName, zone: recorded.zone, peerAddress: recorded.peerAddress }, "agent registered");
    return new Session(this, recorded, token);
  }

  /** Records what `agentId` holds of a blob, replacing its earlier announcement of that digest. */
  announce(agentId: string, announcement: BlobAnnouncement): void {
    const agent = this.agent(agentId);
    const a = this.guard(() => validateAnnouncement(announcement));
    let blob = this.blobs.get(a.digest);
    if (blob !== undefined && (blob.size !== a.size || blob.pieceSize !== a.pieceSize)) {
      const onlyOwn = blob.holders.size === 1 && blob.holders.has(agentId);
      if (!onlyOwn) {
        this.metrics?.requestsRejected.inc({ reason: "conflict" });
        throw new TrackerError(
          "ERR_TRACKER_INVALID_ARGUMENT",
          `announce of ${a.digest} by ${agentId} says size ${a.size}, piece size ${a.pieceSize}; ` +
            `other agents announced size ${blob.size}, piece size ${blob.pieceSize}`,
        );
      }
      // The agent corrects its own earlier announcement; nobody else relies on the old geometry.
      this.blobs.delete(a.digest);
      blob = undefined;
    }
    if (blob === undefined) {
      blob = { size: a.size, pieceSize: a.pieceSize, pieceCount: a.pieceCount, hashes: new Array<Uint8Array | undefined>(a.pieceCount), knownHashes: 0, holders: new Map() };
      this.blobs.set(a.digest, blob);
      this.metrics?.blobs.set(this.blobs.size);
    }
    let conflicts = 0;
    for (const { index, sha256 } of a.pieceHashes) {
      const known = blob.hashes[index];
      if (known === undefined) {
        blob.hashes[index] = sha256;
        blob.knownHashes++;
      } else if (!equalBytes(known, sha256)) conflicts++;
    }
    if (conflicts > 0) {
      this.metrics?.pieceHashConflicts.inc(conflicts);
      this.logger.warn({ agentId, digest: a.digest, conflicts }, "announced piece hashes differ from the known ones; kept the first");
    }
    blob.holders.set(agentId, { complete: a.complete, bitmap: a.bitmap, heldPieces: a.heldPieces });
    agent.blobs.add(a.digest);
    const grant = this.grants.get(a.digest);
    if (grant?.agentId === agentId) {
      if (a.complete) {
        this.grants.delete(a.digest);
        this.logger.debug({ agentId, digest: a.digest }, "origin grant released: blob complete");
      } else if (a.heldPieces > grant.heldPieces) {
        grant.heldPieces = a.heldPieces;
        grant.progressAtMs = this.now();
      }
    }
    if (a.complete) this.released.delete(a.digest);
  }

  /** Forgets `agentId`'s announcement of a blob and releases its grant for it. Unknown digests are ignored. */
  withdraw(agentId: string, digest: Digest): void {
    const agent = this.agent(agentId);
    this.forget(agent, digest);
    if (this.grants.get(digest)?.agentId === agentId) {
      this.grants.delete(digest);
      this.logger.debug({ agentId, digest }, "origin grant released: withdrawn");
    }
  }

  heartbeat(agentId: string, activeUploads: number): void {
    const agent = this.agent(agentId);
    agent.activeUploads = this.guard(() => validateActiveUploads(activeUploads));
  }

  /** Records which digest `agentId` resolved a tag to; an older record than the known one is ignored. */
  publishTag(agentId: string, record: TagRecord): void {
    this.agent(agentId);
    this.tags.record(this.guard(() => validateTagRecord(record)), this.now());
  }

  /** The newest digest published for a tag. Same access rules as lookup. */
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
   * Holders of `digest` ranked for `agentId`, the piece hashes known so far and the origin decision.
   * Throws ERR_TRACKER_NOT_REGISTERED for an agent without a session.
   */
  lookup(agentId: string, digest: Digest, wantOriginGrant: boolean, access: LookupAccess = {}, excluded: readonly string[] = []): LookupResult {
    const asker = this.agent(agentId);
    this.checkAccess(asker, access);
    const blob = this.blobs.get(digest);
    const granted = wantOriginGrant && this.tryGrant(agentId, digest, blob, new Set(excluded));
    const candidates = [];
    for (const [holderId, holding] of blob?.holders ?? []) {
      const holder = this.agents.get(holderId);
      if (holderId === agentId || holder === undefined) continue;
      const info: HolderInfo = {
        ...holder.identity,
        complete: holding.complete,
        bitmap: holding.bitmap ?? new Uint8Array(0),
        activeUploads: holder.activeUploads,
      };
      candidates.push({ info, heldPieces: holding.heldPieces });
    }
    const holders = rankHolders(asker.identity, candidates);
    this.metrics?.lookups.inc({ result: granted ? "granted" : holders.length > 0 ? "holders" : "none" });
    return {
      size: blob?.size ?? 0,
      pieceSize: blob?.pieceSize ?? 0,
      holders,
      pieceHashes: blob === undefined ? [] : Array.from(blob.hashes),
      origin: { granted, granteeAgentId: this.grants.get(digest)?.agentId },
      askerZone: asker.identity.zone,
    };
  }

  snapshot(): TrackerSnapshot {
    return {
      agents: [...this.agents.values()].map((a) => ({ identity: a.identity, activeUploads: a.activeUploads, blobs: [...a.blobs] })),
      blobs: [...this.blobs].map(([digest, b]) => ({
        digest,
        size: b.size,
        pieceSize: b.pieceSize,
        knownHashes: b.knownHashes,
        holders: [...b.holders].map(([agentId, h]) => ({ agentId, complete: h.complete, heldPieces: h.heldPieces })),
      })),
      grants: [...this.grants].map(([digest, g]) => ({ digest, agentId: g.agentId, grantedAtMs: g.grantedAtMs, progressAtMs: g.progressAtMs })),
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
  private tryGrant(agentId: string, digest: Digest, blob: BlobRecord | undefined, excluded: ReadonlySet<string>): boolean {
    const now = this.now();
    const current = this.grants.get(digest);
    if (current?.agentId === agentId) return true;
    // A complete copy elsewhere means the peers can supply it, unless the asker found that holder bad.
    for (const [holderId, holding] of blob?.holders ?? []) if (holding.complete && holderId !== agentId && !excluded.has(holderId)) return false;
    if (current !== undefined && now - current.progressAtMs < this.stallTimeoutMs) return false;
    const heldPieces = blob?.holders.get(agentId)?.heldPieces ?? 0;
    this.grants.set(digest, { agentId, grantedAtMs: now, progressAtMs: now, heldPieces });
    this.metrics?.grants.inc();
    const released = this.released.get(digest);
    this.released.delete(digest);
    if (current !== undefined) {
      this.metrics?.grantMoves.inc({ reason: "stalled" });
      this.logger.info({ digest, from: current.agentId, to: agentId, stalledMs: now - current.progressAtMs }, "origin grant moved: stalled");
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
    for (const digest of [...agent.blobs]) this.forget(agent, digest);
    const now = this.now();
    for (const [digest, grant] of this.grants) {
      if (grant.agentId !== agentId) continue;
      this.grants.delete(digest);
      this.released.set(digest, { agentId, atMs: now });
    }
    for (const [digest, r] of this.released) if (now - r.atMs >= RELEASED_GRANT_MEMORY_MS) this.released.delete(digest);
    this.agents.delete(agentId);
    this.metrics?.agents.set(this.agents.size);
    this.logger.info({ agentId, reason: reason ?? "closed" }, "agent disconnected");
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
    agent.blobs.delete(digest);
    const blob = this.blobs.get(digest);
    if (blob === undefined) return;
    blob.holders.delete(agent.identity.agentId);
    if (blob.holders.size === 0) {
      this.blobs.delete(digest);
      this.metrics?.blobs.set(this.blobs.size);
    }
  }

  private agent(agentId: string): AgentRecord {
    const agent = this.agents.get(agentId);
    if (agent !== undefined) return agent;
    this.metrics?.requestsRejected.inc({ reason: "not_registered" });
    throw new TrackerError("ERR_TRACKER_NOT_REGISTERED", `agent ${JSON.stringify(agentId.slice(0, 128))} has no session with the tracker`);
  }

  /** Lookups in an agent's name: the membership still admits it, and the caller is the session's principal. */
  private checkAccess(asker: AgentRecord, access: LookupAccess): void {
    if (access.principal !== undefined && access.principal !== asker.principal) {
      throw new TrackerError("ERR_TRACKER_PERMISSION_DENIED", `agent ${asker.identity.agentId} has a session of another workload than ${access.principal}`);
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

  close(): void {
    this.tracker.closeSession(this.identity.agentId, this.token);
  }

  private current(): string {
    if (!this.open) throw new TrackerError("ERR_TRACKER_CLOSED", `session of agent ${this.identity.agentId} has ended`);
    return this.identity.agentId;
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
