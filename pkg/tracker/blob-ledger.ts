import type { Logger } from "pino";
import type { ControllerMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import { AnswerCache, type HashList } from "./answer-cache.js";
import { BlobClaims, type Claim, joinHashes, NO_HASHES } from "./blob-claims.js";
import { TrackerError } from "./errors.js";
import type { Holding } from "./holder-index.js";
import type { AgentIdentity } from "./tracker.js";
import type { ValidAnnouncement } from "./validation.js";

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

/** An agent as the ledger charges it: the blobs it announced and the memory they cost (MEMORY_BUDGET_PER_AGENT_BYTES). */
export interface ChargedAgent {
  readonly identity: AgentIdentity;
  readonly blobs: Set<Digest>;
  chargedBytes: number;
}

export interface BlobLedgerOptions {
  readonly logger: Logger;
  readonly metrics: ControllerMetrics | undefined;
  /** The agents of a node, for BlobClaims (one function shared by every blob). */
  readonly sameNode: (nodeName: string) => Iterable<string>;
}

/** What recording one announcement did, for what the tracker does next (events, grants, notices). */
export interface Recorded<A> {
  readonly entry: BlobClaims<A>;
  /** The claim the announcement joined or created. */
  readonly claim: Claim<A>;
  /** What the agent held of the blob before; undefined when it held nothing. */
  readonly previous: Holding | undefined;
  /** Piece hashes the claim learnt from it. */
  readonly added: number;
}

/** One claim about a blob as TrackerSnapshot lists it. */
export interface BlobSnapshot {
  readonly digest: Digest;
  readonly size: number;
  readonly pieceSize: number;
  readonly knownHashes: number;
  readonly holders: readonly { readonly agentId: string; readonly complete: boolean; readonly heldPieces: number }[];
}

/**
 * Every blob agents announced: per digest the claims about it (blob-claims.ts) and who holds which pieces
 * of each, the hash lists lookups answer with (answer-cache.ts), and the controller memory every agent is
 * charged for what it announced. Changed only by MemoryTracker, which owns the sessions, grants and
 * notices around it; `A` is its record of an agent.
 */
export class BlobLedger<A extends ChargedAgent> {
  /** Per digest, the claims agents made about it: kept apart while they disagree. */
  private readonly blobs = new Map<Digest, BlobClaims<A>>();
  private readonly answers = new AnswerCache<A>();

  constructor(private readonly options: BlobLedgerOptions) {}

  /** Digests with at least one holder. */
  get size(): number {
    return this.blobs.size;
  }

  claimsOf(digest: Digest): BlobClaims<A> | undefined {
    return this.blobs.get(digest);
  }

  /**
   * Records `agent`'s (validated) announcement, replacing its earlier one of that digest: it joins the
   * claim it agrees with or starts its own, and the agent is charged for what it adds. Throws
   * ERR_TRACKER_INVALID_ARGUMENT when the agent is excluded for the blob or the announcement agrees with
   * no claim and no more can be kept apart, ERR_TRACKER_RESOURCE_EXHAUSTED past the agent's budget.
   */
  record(agentId: string, agent: A, a: ValidAnnouncement): Recorded<A> {
    const { logger, metrics } = this.options;
    let entry = this.blobs.get(a.digest);
    if (entry?.isExcluded(agentId) === true) {
      metrics?.requestsRejected.inc({ reason: "excluded" });
      throw new TrackerError(
        "ERR_TRACKER_INVALID_ARGUMENT",
        `announce of ${a.digest} by ${agentId} refused: it announced a complete copy that complete copies on other nodes contradict`,
      );
    }
    const placement = entry === undefined ? ({ kind: "create", carried: NO_HASHES } as const) : entry.place(agentId, a);
    if (placement.kind === "refuse") {
      metrics?.requestsRejected.inc({ reason: "conflict" });
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
      entry = new BlobClaims(this.options.sameNode);
      this.blobs.set(a.digest, entry);
      metrics?.blobs.set(this.blobs.size);
    }
    const before = entry.claimOf(agentId);
    const previous = before?.holders.get(agentId);
    const claim = placement.kind === "create" ? entry.create(a, agent) : placement.claim;
    const { added, overwritten } = entry.record(claim, joinHashes(placement.carried, a.hashes));
    if (added + overwritten > 0) this.answers.forget(claim);
    if (before !== undefined && before !== claim && before.holders.size > 1) {
      // It contradicts what other members said: kept apart. (The only member changing its mind is no conflict.)
      metrics?.pieceHashConflicts.inc();
      logger.warn(
        { agentId, digest: a.digest, size: a.size, pieceSize: a.pieceSize, claims: entry.claims.length },
        "announce contradicts the agent's claim about the blob; kept apart from it",
      );
    } else if (overwritten > 0) {
      metrics?.pieceHashConflicts.inc(overwritten);
      logger.warn({ agentId, digest: a.digest, changed: overwritten }, "the only holder of a claim changed piece hashes it announced");
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
    return { entry, claim, previous, added };
  }

  /**
   * Forgets `agent`'s announcement of `digest` and gives back what it was charged for it. Returns whether
   * the agent held the blob complete (unknown digests: false).
   */
  forget(agent: A, digest: Digest): boolean {
    if (agent.blobs.delete(digest)) agent.chargedBytes -= HOLDER_COST_BYTES;
    const entry = this.blobs.get(digest);
    if (entry === undefined) return false;
    const agentId = agent.identity.agentId;
    const wasComplete = entry.claimOf(agentId)?.holders.get(agentId)?.complete === true;
    const emptied = entry.release(agentId, agent.identity.nodeName);
    if (emptied !== undefined) this.dropClaim(emptied);
    if (entry.holderCount === 0) {
      this.blobs.delete(digest);
      this.options.metrics?.blobs.set(this.blobs.size);
    }
    return wasComplete;
  }

  /** Whether the agent has announced a complete copy of the blob. */
  holdsComplete(agentId: string, digest: Digest): boolean {
    return this.blobs.get(digest)?.claimOf(agentId)?.holders.get(agentId)?.complete === true;
  }

  /** `agent`'s zone changed: its holdings are ranked by the new one. */
  rezone(agentId: string, agent: A, zone: string): void {
    for (const digest of agent.blobs) this.blobs.get(digest)?.claimOf(agentId)?.holders.rezone(agentId, zone);
  }

  /** The piece hashes a lookup answered with `claim` carries (AnswerCache). */
  answer(claim: Claim<A>): HashList {
    return this.answers.answer(claim);
  }

  snapshot(): BlobSnapshot[] {
    return [...this.blobs].flatMap(([digest, entry]) =>
      entry.claims.map((b) => ({
        digest,
        size: b.size,
        pieceSize: b.pieceSize,
        knownHashes: b.knownHashes,
        holders: [...b.holders.holdings()].map(([agentId, h]) => ({ agentId, complete: h.complete, heldPieces: h.heldPieces })),
      })),
    );
  }

  /** A claim nobody holds any more: its hash storage is given back to the agent whose announce created it. */
  private dropClaim(claim: Claim<A>): void {
    this.answers.forget(claim);
    claim.creator.chargedBytes -= recordCost(claim.pieceCount);
  }

  private exhausted(agentId: string, message: string): TrackerError {
    this.options.metrics?.requestsRejected.inc({ reason: "exhausted" });
    this.options.logger.warn({ agentId }, message);
    return new TrackerError("ERR_TRACKER_RESOURCE_EXHAUSTED", message);
  }
}

/** What a blob record of `pieceCount` pieces costs the tracker, charged to the agent that created it. */
function recordCost(pieceCount: number): number {
  return RECORD_COST_BYTES + pieceCount * PIECE_COST_BYTES;
}
