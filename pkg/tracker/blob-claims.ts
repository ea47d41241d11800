import { PIECE_HASH_BYTES } from "../piece/index.js";
import { type Holding, HolderIndex } from "./holder-index.js";
import type { ValidAnnouncement } from "./validation.js";

/**
 * Distinct nodes whose complete copies of a claim must agree before the claim is taken as the truth
 * about a blob: every other claim it contradicts is discarded, and the agents that announced those as
 * complete are excluded for the blob. Two, because one node can only ever vouch for itself — it may be
 * the liar — and an agent announces a blob complete only after its digest verified.
 */
export const CORROBORATING_NODES = 2;
/**
 * Claims kept apart for one digest. Honest agents agree, so they share one claim; each agent is in at
 * most one claim per digest, so more than this many means several members disagree and the surplus
 * announces are refused.
 */
export const MAX_CLAIMS_PER_BLOB = 4;

/**
 * One version of the truth about a blob: its geometry and the piece hashes its members announced, which
 * never contradict one another. Members are agents whose announcements agree with every hash the claim
 * knows. `C` is whatever the tracker charges the claim's memory to (its creator).
 */
export interface Claim<C> {
  /** Creation order within the digest: older claims win ties. */
  readonly id: number;
  readonly size: number;
  readonly pieceSize: number;
  readonly pieceCount: number;
  /** Piece hashes, packed (32 bytes at index * 32); `knownBits` says which are known. */
  readonly hashBytes: Uint8Array;
  readonly knownBits: Uint8Array;
  knownHashes: number;
  readonly holders: HolderIndex;
  /** The one Holding object every complete holder of this claim shares. */
  readonly completeHolding: Holding;
  /** Node name → complete holders on it: a node counts once however many agents it runs. */
  readonly completeNodes: Map<string, number>;
  readonly creator: C;
}

/** Where an announcement goes: a claim it agrees with, or a new one. */
export type Placement<C> =
  | { readonly kind: "join"; readonly claim: Claim<C>; readonly carried: readonly PieceHash[] }
  | { readonly kind: "create"; readonly carried: readonly PieceHash[] }
  | { readonly kind: "refuse"; readonly reason: string };

interface PieceHash {
  readonly index: number;
  readonly sha256: Uint8Array;
}

/**
 * The claims about one digest, kept apart per group of agreeing announcers (a member's claim can never
 * overwrite another's), and the agents excluded for it. A lookup answers with one claim — the one
 * independent complete copies corroborate, else the one holding the tracker's own origin grantee, else
 * the best-supported — and the asker names holders it found bad to be answered with another.
 */
export class BlobClaims<C> {
  readonly claims: Claim<C>[] = [];
  /** Agents that announced complete copies a corroborated claim contradicts: their announces are refused. */
  readonly excluded = new Set<string>();
  /** The agent whose origin fetch completed last: its claim is preferred until one is corroborated. */
  lastGrantee: string | undefined;
  private readonly memberOf = new Map<string, Claim<C>>();
  private nextId = 0;

  claimOf(agentId: string): Claim<C> | undefined {
    return this.memberOf.get(agentId);
  }

  /** Holders over all claims. */
  get holderCount(): number {
    return this.memberOf.size;
  }

  /**
   * The claim a lookup answers with, or undefined when none fits: claims of another size than the asker
   * knows (`expectedSize`), and claims whose every holder the asker excluded, are left out.
   * Ranked: corroborated first, then the one holding `grantee` (the current origin grantee, else the last
   * one that completed), then more complete nodes, more holders, older.
   */
  choose(
    asker: string,
    excluded: ReadonlySet<string>,
    expectedSize: number | undefined,
    grantee: string | undefined,
  ): Claim<C> | undefined {
    let best: Claim<C> | undefined;
    let bestKey: readonly number[] = [];
    const trusted = grantee ?? this.lastGrantee;
    for (const claim of this.claims) {
      if (expectedSize !== undefined && claim.size !== expectedSize) continue;
      // Its own claim always fits the asker (it learns the geometry it announced); others once it excluded every holder do not.
      if (!claim.holders.has(asker) && excluded.size > 0) {
        let unusable = 0;
        for (const id of excluded) if (claim.holders.has(id)) unusable++;
        if (claim.holders.size <= unusable) continue;
      }
      const key = [
        claim.completeNodes.size >= CORROBORATING_NODES ? 1 : 0,
        trusted !== undefined && !excluded.has(trusted) && claim.holders.has(trusted) ? 1 : 0,
        claim.completeNodes.size,
        claim.holders.size,
        -claim.id,
      ];
      if (best === undefined || compareKeys(key, bestKey) > 0) {
        best = claim;
        bestKey = key;
      }
    }
    return best;
  }

  /**
   * Where `agentId`'s announcement belongs. Its own claim while it agrees with it (or while the agent is
   * its only member: it corrects itself). Otherwise — it is new, or it contradicts what other members
   * said — the claim lookups would answer with if that agrees, else the oldest that agrees, else a new
   * one. An agent that leaves a claim takes along the hashes of the pieces it holds (`carried`): it
   * announced or agreed with them before.
   */
  place(agentId: string, a: ValidAnnouncement): Placement<C> {
    const own = this.memberOf.get(agentId);
    if (own !== undefined && sameGeometry(own, a) && (own.holders.size === 1 || conflicts(own, a.pieceHashes) === 0)) {
      return { kind: "join", claim: own, carried: [] };
    }
    const carried = own !== undefined && sameGeometry(own, a) ? carriedHashes(own, own.holders.get(agentId), a.pieceHashes) : [];
    const agrees = (claim: Claim<C>): boolean =>
      claim !== own && sameGeometry(claim, a) && conflicts(claim, a.pieceHashes) === 0 && conflicts(claim, carried) === 0;
    const preferred = this.choose(agentId, new Set(), a.size, undefined);
    if (preferred !== undefined && agrees(preferred)) return { kind: "join", claim: preferred, carried };
    const oldest = this.claims.find(agrees);
    if (oldest !== undefined) return { kind: "join", claim: oldest, carried };
    const soleMember = own !== undefined && own.holders.size === 1;
    if (this.claims.length - (soleMember ? 1 : 0) >= MAX_CLAIMS_PER_BLOB) {
      return { kind: "refuse", reason: `${this.claims.length} disagreeing claims are known already (at most ${MAX_CLAIMS_PER_BLOB})` };
    }
    return { kind: "create", carried };
  }

  /** A new, empty claim of the announcement's geometry, charged to `creator`. */
  create(a: ValidAnnouncement, creator: C): Claim<C> {
    const claim: Claim<C> = {
      id: this.nextId++,
      size: a.size,
      pieceSize: a.pieceSize,
      pieceCount: a.pieceCount,
      hashBytes: new Uint8Array(a.pieceCount * PIECE_HASH_BYTES),
      knownBits: new Uint8Array(Math.ceil(a.pieceCount / 8)),
      knownHashes: 0,
      holders: new HolderIndex(),
      completeHolding: { complete: true, bitmap: undefined, heldPieces: a.pieceCount },
      completeNodes: new Map(),
      creator,
    };
    this.claims.push(claim);
    return claim;
  }

  /** Records hashes into a claim; returns how many differed from known ones (overwritten: only a sole member's own claim is written over). */
  record(claim: Claim<C>, hashes: readonly PieceHash[]): { added: number; overwritten: number } {
    let added = 0;
    let overwritten = 0;
    for (const { index, sha256 } of hashes) {
      const byte = index >> 3;
      const bit = 1 << (index & 7);
      const offset = index * PIECE_HASH_BYTES;
      if (((claim.knownBits[byte] ?? 0) & bit) === 0) {
        claim.hashBytes.set(sha256, offset);
        claim.knownBits[byte] = (claim.knownBits[byte] ?? 0) | bit;
        claim.knownHashes++;
        added++;
      } else if (!equalBytes(claim.hashBytes.subarray(offset, offset + PIECE_HASH_BYTES), sha256)) {
        claim.hashBytes.set(sha256, offset);
        overwritten++;
      }
    }
    return { added, overwritten };
  }

  /** Makes `agentId` a holder of `claim` (leaving any other claim of this digest; returns that one if it emptied). */
  hold(agentId: string, nodeName: string, zone: string, claim: Claim<C>, holding: Holding): Claim<C> | undefined {
    const before = this.memberOf.get(agentId);
    let emptied: Claim<C> | undefined;
    if (before !== undefined && before !== claim) emptied = this.release(agentId, nodeName);
    const wasComplete = claim.holders.get(agentId)?.complete === true;
    claim.holders.set(agentId, zone, holding);
    this.memberOf.set(agentId, claim);
    if (!wasComplete && holding.complete) claim.completeNodes.set(nodeName, (claim.completeNodes.get(nodeName) ?? 0) + 1);
    if (wasComplete && !holding.complete) uncount(claim, nodeName);
    return emptied;
  }

  /** Removes `agentId` from its claim; returns the claim when that left it empty (it is dropped). */
  release(agentId: string, nodeName: string): Claim<C> | undefined {
    const claim = this.memberOf.get(agentId);
    if (claim === undefined) return undefined;
    if (claim.holders.get(agentId)?.complete === true) uncount(claim, nodeName);
    claim.holders.delete(agentId);
    this.memberOf.delete(agentId);
    if (claim.holders.size > 0) return undefined;
    this.claims.splice(this.claims.indexOf(claim), 1);
    return claim;
  }

  /**
   * Once `winner` is corroborated, the claims it contradicts (another geometry, or a piece hash that
   * differs): their members, for the caller to forget; complete ones are liars and are excluded here.
   */
  contradicted(winner: Claim<C>): { readonly agentId: string; readonly complete: boolean }[] {
    if (winner.completeNodes.size < CORROBORATING_NODES) return [];
    const out: { agentId: string; complete: boolean }[] = [];
    for (const claim of this.claims) {
      if (claim === winner || !contradicts(winner, claim)) continue;
      for (const [agentId, holding] of claim.holders.holdings()) {
        out.push({ agentId, complete: holding.complete });
        if (holding.complete) this.excluded.add(agentId);
      }
    }
    return out;
  }
}

function uncount<C>(claim: Claim<C>, nodeName: string): void {
  const n = (claim.completeNodes.get(nodeName) ?? 0) - 1;
  if (n > 0) claim.completeNodes.set(nodeName, n);
  else claim.completeNodes.delete(nodeName);
}

function sameGeometry<C>(claim: Claim<C>, a: { readonly size: number; readonly pieceSize: number }): boolean {
  return claim.size === a.size && claim.pieceSize === a.pieceSize;
}

/** Pieces whose hash both the claim and `hashes` know, and which differ. */
function conflicts<C>(claim: Claim<C>, hashes: readonly PieceHash[]): number {
  let n = 0;
  for (const { index, sha256 } of hashes) {
    if (((claim.knownBits[index >> 3] ?? 0) & (1 << (index & 7))) === 0) continue;
    const offset = index * PIECE_HASH_BYTES;
    if (!equalBytes(claim.hashBytes.subarray(offset, offset + PIECE_HASH_BYTES), sha256)) n++;
  }
  return n;
}

function contradicts<C>(a: Claim<C>, b: Claim<C>): boolean {
  if (!sameGeometry(a, b)) return true;
  for (let index = 0; index < a.pieceCount; index++) {
    const bit = 1 << (index & 7);
    if (((a.knownBits[index >> 3] ?? 0) & bit) === 0 || ((b.knownBits[index >> 3] ?? 0) & bit) === 0) continue;
    const offset = index * PIECE_HASH_BYTES;
    if (!equalBytes(a.hashBytes.subarray(offset, offset + PIECE_HASH_BYTES), b.hashBytes.subarray(offset, offset + PIECE_HASH_BYTES)))
      return true;
  }
  return false;
}

/** The claim's hashes of the pieces `holding` has that `fresh` does not name: what a leaving member takes along. */
function carriedHashes<C>(claim: Claim<C>, holding: Holding | undefined, fresh: readonly PieceHash[]): PieceHash[] {
  if (holding === undefined) return [];
  const named = new Set(fresh.map((h) => h.index));
  const out: PieceHash[] = [];
  for (let index = 0; index < claim.pieceCount; index++) {
    const bit = 1 << (index & 7);
    if (named.has(index) || ((claim.knownBits[index >> 3] ?? 0) & bit) === 0) continue;
    if (!holding.complete && ((holding.bitmap?.[index >> 3] ?? 0) & (0x80 >> (index & 7))) === 0) continue;
    const offset = index * PIECE_HASH_BYTES;
    out.push({ index, sha256: claim.hashBytes.slice(offset, offset + PIECE_HASH_BYTES) });
  }
  return out;
}

function compareKeys(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < a.length; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
