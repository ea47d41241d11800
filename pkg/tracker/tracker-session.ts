import type { WorkloadIdentity } from "../identity/index.js";
import type { Digest } from "../oci/index.js";
import { TrackerError } from "./errors.js";
import type { Membership } from "./membership.js";
import type { AgentCommand, PrefetchReport } from "./prefetch.js";
import type { AgentIdentity, BlobAnnouncement, BlobChange, TagRecord } from "./tracker.js";

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

/**
 * What a session handle calls into (MemoryTracker): the agent-keyed operations, and whether the handle's
 * `token` still names the agent's current session.
 */
export interface SessionOwner {
  isCurrent(agentId: string, token: object): boolean;
  closeSession(agentId: string, token: object): void;
  announce(agentId: string, announcement: BlobAnnouncement): void;
  withdraw(agentId: string, digest: Digest): void;
  heartbeat(agentId: string, activeUploads: number): void;
  publishTag(agentId: string, record: TagRecord): void;
  prefetchReport(agentId: string, report: PrefetchReport): void;
}

/**
 * The handle register() returns: the owner's operations in this agent's name, for as long as this is its
 * current session (a newer session of the same agent id supersedes it, and this one then throws).
 */
export class Session implements TrackerSession {
  constructor(
    private readonly owner: SessionOwner,
    readonly identity: AgentIdentity,
    private readonly token: object,
  ) {}

  get open(): boolean {
    return this.owner.isCurrent(this.identity.agentId, this.token);
  }

  announce(announcement: BlobAnnouncement): void {
    this.owner.announce(this.current(), announcement);
  }

  withdraw(digest: Digest): void {
    this.owner.withdraw(this.current(), digest);
  }

  heartbeat(activeUploads: number): void {
    this.owner.heartbeat(this.current(), activeUploads);
  }

  publishTag(record: TagRecord): void {
    this.owner.publishTag(this.current(), record);
  }

  prefetchReport(report: PrefetchReport): void {
    this.owner.prefetchReport(this.current(), report);
  }

  close(): void {
    this.owner.closeSession(this.identity.agentId, this.token);
  }

  private current(): string {
    if (!this.open) throw new TrackerError("ERR_TRACKER_CLOSED", `session of agent ${this.identity.agentId} has ended`);
    return this.identity.agentId;
  }
}
