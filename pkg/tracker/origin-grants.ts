import type { Logger } from "pino";
import type { ControllerMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import type { Claim } from "./blob-claims.js";

/** A grantee that announces no new pieces for this long loses the grant to the next asker. */
export const DEFAULT_GRANT_STALL_TIMEOUT_MS = 10_000;
/** How long a grant released by a disconnect is remembered, so the next grant counts as a move. */
const RELEASED_GRANT_MEMORY_MS = 60_000;
/**
 * An agent already fetching this many blobs from the origin is granted another only if no other agent asks
 * for it within GRANT_SPREAD_MS (it is told to ask again then). Seen in `npm run bench` (8 nodes, an image of
 * 4 layers): when one agent held the grants of all four layers, one or two of its four origin transfers ran
 * at 1/4–1/30 of the others for 5–20 s (in 4 runs of 4); with the grants on two or three agents, none did
 * (4 runs of 4). Spread grants also spread the first upload of each layer to the swarm.
 */
export const SPREAD_GRANTS_FROM = 2;
export const GRANT_SPREAD_MS = 500;
/** Deferred grants remembered at most (the blobs busy agents asked for in the last few seconds). */
const MAX_DEFERRED = 4096;

export interface OriginGrantsOptions {
  readonly logger: Logger;
  readonly metrics: ControllerMetrics | undefined;
  /** Milliseconds clock. */
  readonly now: () => number;
  readonly stallTimeoutMs: number;
}

interface Grant {
  readonly agentId: string;
  readonly grantedAtMs: number;
  progressAtMs: number;
  heldPieces: number;
}

/** One grant as TrackerSnapshot lists it. */
export interface GrantSnapshot {
  readonly digest: Digest;
  readonly agentId: string;
  readonly grantedAtMs: number;
  readonly progressAtMs: number;
}

/**
 * Who may fetch which blob from the origin: at most one grantee per digest (origin single-flight). A grant
 * ends when its blob is complete, its grantee withdraws it or is gone, and moves to the next asker when
 * its grantee stalls (no new pieces for the stall timeout). Stalls are noticed lazily, by the next
 * tryGrant, so there are no timers. Grants released by a disconnect are remembered for a while, so that
 * the next grant of the blob is counted as a move.
 */
export class OriginGrants {
  private readonly grants = new Map<Digest, Grant>();
  /** Grants held per agent. */
  private readonly held = new Map<string, number>();
  /** Blobs whose grant a busy agent was told to ask again for: until when other agents have the first claim. */
  private readonly deferred = new Map<Digest, number>();
  /** Grants released by a disconnect: who held them and when, so the next grant can count as a move. */
  private readonly released = new Map<Digest, { readonly agentId: string; readonly atMs: number }>();

  constructor(private readonly options: OriginGrantsOptions) {}

  /** The agent holding the grant of `digest` now. */
  granteeOf(digest: Digest): string | undefined {
    return this.grants.get(digest)?.agentId;
  }

  /**
   * The grant decision for `agentId` asking to fetch `digest` (`blob`: the claim its lookup answers with);
   * true when `agentId` holds the grant after it.
   */
  tryGrant(agentId: string, digest: Digest, blob: Claim<unknown> | undefined, excluded: ReadonlySet<string>): boolean {
    const { logger, metrics } = this.options;
    const now = this.options.now();
    const current = this.grants.get(digest);
    if (current?.agentId === agentId) return true;
    // A complete copy elsewhere means the peers can supply it, unless the asker found that holder bad.
    // Counted, not searched: a popular blob has thousands of holders and every asker wants a grant.
    if (blob !== undefined && blob.holders.completeCount > 0) {
      let unusable = blob.holders.get(agentId)?.complete === true ? 1 : 0;
      for (const id of excluded) if (id !== agentId && blob.holders.get(id)?.complete === true) unusable++;
      if (blob.holders.completeCount > unusable) return false;
    }
    if (current !== undefined && now - current.progressAtMs < this.options.stallTimeoutMs) return false;
    const heldPieces = blob?.holders.get(agentId)?.heldPieces ?? 0;
    this.setGrant(digest, { agentId, grantedAtMs: now, progressAtMs: now, heldPieces });
    metrics?.grants.inc();
    const released = this.released.get(digest);
    this.released.delete(digest);
    if (current !== undefined) {
      metrics?.grantMoves.inc({ reason: "stalled" });
      logger.info({ digest, from: current.agentId, to: agentId, stalledMs: now - current.progressAtMs }, "origin grant moved: stalled");
    } else if (released !== undefined && released.agentId !== agentId && now - released.atMs < RELEASED_GRANT_MEMORY_MS) {
      metrics?.grantMoves.inc({ reason: "disconnected" });
      logger.info({ digest, from: released.agentId, to: agentId }, "origin grant moved: previous grantee disconnected");
    } else {
      logger.debug({ digest, agentId }, "origin grant");
    }
    return true;
  }

  /**
   * `agentId` announced `digest`. Its grant of it (if any) ends with a complete copy (returns true), and
   * otherwise counts as progress while it holds more pieces than before.
   */
  announced(agentId: string, digest: Digest, complete: boolean, heldPieces: number): boolean {
    const grant = this.grants.get(digest);
    if (grant?.agentId !== agentId) return false;
    if (complete) {
      this.deleteGrant(digest);
      this.options.logger.debug({ agentId, digest }, "origin grant released: blob complete");
      return true;
    }
    if (heldPieces > grant.heldPieces) {
      grant.heldPieces = heldPieces;
      grant.progressAtMs = this.options.now();
    }
    return false;
  }

  /** A complete copy of `digest` is known: the next grant of it is no move from a disconnected grantee. */
  forgetReleased(digest: Digest): void {
    this.released.delete(digest);
  }

  /** Ends `agentId`'s grant of `digest` (withdrawn, or excluded for the blob); true when it held one. */
  release(agentId: string, digest: Digest): boolean {
    if (this.grants.get(digest)?.agentId !== agentId) return false;
    this.deleteGrant(digest);
    return true;
  }

  /** `agentId`'s session ended: every grant it held is released and remembered; returns their digests. */
  releaseAll(agentId: string): Digest[] {
    const now = this.options.now();
    const digests: Digest[] = [];
    for (const [digest, grant] of this.grants) {
      if (grant.agentId !== agentId) continue;
      this.deleteGrant(digest);
      this.released.set(digest, { agentId, atMs: now });
      digests.push(digest);
    }
    for (const [digest, r] of this.released) if (now - r.atMs >= RELEASED_GRANT_MEMORY_MS) this.released.delete(digest);
    return digests;
  }

  /**
   * Before tryGrant, for an agent that wants the grant of `digest`: 0 when the grant may be decided now, or
   * how long it should wait before asking again (the asker already holds SPREAD_GRANTS_FROM grants and no
   * other agent has had GRANT_SPREAD_MS to ask). Another agent asking meanwhile is decided at once.
   */
  deferral(agentId: string, digest: Digest): number {
    if (this.grants.has(digest) || (this.held.get(agentId) ?? 0) < SPREAD_GRANTS_FROM) return 0;
    const now = this.options.now();
    const untilMs = this.deferred.get(digest);
    if (untilMs !== undefined) return now >= untilMs ? 0 : Math.ceil(untilMs - now);
    if (this.deferred.size >= MAX_DEFERRED) {
      for (const [d, until] of this.deferred) if (now >= until) this.deferred.delete(d);
      // Still full of live entries: decide at once rather than grow.
      if (this.deferred.size >= MAX_DEFERRED) return 0;
    }
    this.deferred.set(digest, now + GRANT_SPREAD_MS);
    return GRANT_SPREAD_MS;
  }

  snapshot(): GrantSnapshot[] {
    return [...this.grants].map(([digest, g]) => ({
      digest,
      agentId: g.agentId,
      grantedAtMs: g.grantedAtMs,
      progressAtMs: g.progressAtMs,
    }));
  }

  private setGrant(digest: Digest, grant: Grant): void {
    const previous = this.grants.get(digest);
    if (previous !== undefined) this.deleteGrant(digest);
    this.grants.set(digest, grant);
    this.held.set(grant.agentId, (this.held.get(grant.agentId) ?? 0) + 1);
    this.deferred.delete(digest);
  }

  private deleteGrant(digest: Digest): void {
    const grant = this.grants.get(digest);
    if (grant === undefined) return;
    this.grants.delete(digest);
    const count = (this.held.get(grant.agentId) ?? 0) - 1;
    if (count > 0) this.held.set(grant.agentId, count);
    else this.held.delete(grant.agentId);
  }
}
