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
  /** Hashes known (the first `knownHashes` entries of `hashLog`). */
  knownHashes: number;
  /**
   * Piece indices in the order their hashes became known: a watcher that was told the first n knows
   * exactly the rest from n on (a notice's new hashes). 4 bytes a piece.
   */
  readonly hashLog: Uint32Array;
  /** Bumped when a known hash is written over (a sole member changed its mind): the log no longer tells all. */
  revision: number;
  readonly holders: HolderIndex;
  /** The one Holding object every complete holder of this claim shares. */
  readonly completeHolding: Holding;
  /** Distinct nodes with a complete holder: a node counts once however many agents it runs. */
  completeNodes: number;
  readonly creator: C;
}

/** Where an announcement goes: a claim it agrees with, or a new one. */
export type Placement<C> =
  | { readonly kind: "join"; readonly claim: Claim<C>; readonly carried: Hashes }
  | { readonly kind: "create"; readonly carried: Hashes }
  | { readonly kind: "refuse"; readonly reason: string };

/** Piece hashes as the tracker handles them: indices, and their SHA-256 concatenated in that order. */
export interface Hashes {
  readonly indices: ArrayLike<number>;
  readonly bytes: Uint8Array;
}

const NOBODY: ReadonlySet<string> = new Set();

export const NO_HASHES: Hashes = { indices: new Uint32Array(0), bytes: new Uint8Array(0) };

/**
 * The claims about one digest, kept apart per group of agreeing announcers (a member's claim can never
 * overwrite another's), and the agents excluded for it. A lookup answers with one claim — the one
 * independent complete copies corroborate, else the one holding the tracker's own origin grantee, else
 * the best-supported — and the asker names holders it found bad to be answered with another.
 */
export class BlobClaims<C> {
  readonly claims: Claim<C>[] = [];
  /**
   * Agents that announced complete copies a corroborated claim contradicts: their announces are refused.
   * Created when the first is excluded (a tracker keeps tens of thousands of these objects).
   */
  excluded: Set<string> | undefined;
  /** The agent whose origin fetch completed last: its claim is preferred until one is corroborated. */
  lastGrantee: string | undefined;
  private nextId = 0;

  /**
   * `sameNode`: the agents registered from a node; a node's complete copies count once. No map per claim:
   * a node runs one agent, so asking its few agents is cheaper than keeping one.
   */
  constructor(private readonly sameNode: (nodeName: string) => Iterable<string>) {}

  /** The claim `agentId` is a member of (at most MAX_CLAIMS_PER_BLOB are looked at). */
  claimOf(agentId: string): Claim<C> | undefined {
    for (const claim of this.claims) if (claim.holders.has(agentId)) return claim;
    return undefined;
  }

  isExcluded(agentId: string): boolean {
    return this.excluded?.has(agentId) === true;
  }

  /** Holders over all claims. */
  get holderCount(): number {
    let n = 0;
    for (const claim of this.claims) n += claim.holders.size;
    return n;
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
        claim.completeNodes >= CORROBORATING_NODES ? 1 : 0,
        trusted !== undefined && !excluded.has(trusted) && claim.holders.has(trusted) ? 1 : 0,
        claim.completeNodes,
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
    const own = this.claimOf(agentId);
    if (own !== undefined && sameGeometry(own, a) && (own.holders.size === 1 || conflicts(own, a.hashes) === 0)) {
      return { kind: "join", claim: own, carried: NO_HASHES };
    }
    const carried = own !== undefined && sameGeometry(own, a) ? carriedHashes(own, own.holders.get(agentId), a.hashes) : NO_HASHES;
    const agrees = (claim: Claim<C>): boolean =>
      claim !== own && sameGeometry(claim, a) && conflicts(claim, a.hashes) === 0 && conflicts(claim, carried) === 0;
    const preferred = this.choose(agentId, NOBODY, a.size, undefined);
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
      hashLog: new Uint32Array(a.pieceCount),
      revision: 0,
      holders: new HolderIndex(),
      completeHolding: { complete: true, bitmap: undefined, heldPieces: a.pieceCount },
      completeNodes: 0,
      creator,
    };
    this.claims.push(claim);
    return claim;
  }

  /** Records hashes into a claim; returns how many differed from known ones (overwritten: only a sole member's own claim is written over). */
  record(claim: Claim<C>, hashes: Hashes): { added: number; overwritten: number } {
    let added = 0;
    let overwritten = 0;
    for (let i = 0; i < hashes.indices.length; i++) {
      const index = hashes.indices[i] ?? 0;
      const byte = index >> 3;
      const bit = 1 << (index & 7);
      const offset = index * PIECE_HASH_BYTES;
      const sha256 = hashes.bytes.subarray(i * PIECE_HASH_BYTES, (i + 1) * PIECE_HASH_BYTES);
      if (((claim.knownBits[byte] ?? 0) & bit) === 0) {
        claim.hashBytes.set(sha256, offset);
        claim.knownBits[byte] = (claim.knownBits[byte] ?? 0) | bit;
        claim.hashLog[claim.knownHashes] = index;
        claim.knownHashes++;
        added++;
      } else if (!equalAt(claim.hashBytes, offset, hashes.bytes, i * PIECE_HASH_BYTES)) {
        claim.hashBytes.set(sha256, offset);
        claim.revision++;
        overwritten++;
      }
    }
    return { added, overwritten };
  }

  /** Makes `agentId` (of node `nodeName`) a holder of `claim`, leaving any other claim of this digest; returns that one if it emptied. */
  hold(agentId: string, nodeName: string, zone: string, claim: Claim<C>, holding: Holding): Claim<C> | undefined {
    const before = this.claimOf(agentId);
    let emptied: Claim<C> | undefined;
    if (before !== undefined && before !== claim) emptied = this.release(agentId, nodeName);
    const wasComplete = claim.holders.get(agentId)?.complete === true;
    if (wasComplete !== holding.complete && !this.nodeHoldsComplete(claim, nodeName, agentId))
      claim.completeNodes += holding.complete ? 1 : -1;
    claim.holders.set(agentId, zone, holding);
    return emptied;
  }

  /** Removes `agentId` from its claim; returns the claim when that left it empty (it is dropped). */
  release(agentId: string, nodeName: string): Claim<C> | undefined {
    const claim = this.claimOf(agentId);
    if (claim === undefined) return undefined;
    const wasComplete = claim.holders.get(agentId)?.complete === true;
    claim.holders.delete(agentId);
    if (wasComplete && !this.nodeHoldsComplete(claim, nodeName, agentId)) claim.completeNodes--;
    if (claim.holders.size > 0) return undefined;
    this.claims.splice(this.claims.indexOf(claim), 1);
    return claim;
  }

  /** Whether another agent of the node than `except` holds the claim complete. */
  private nodeHoldsComplete(claim: Claim<C>, nodeName: string, except: string): boolean {
    for (const id of this.sameNode(nodeName)) if (id !== except && claim.holders.get(id)?.complete === true) return true;
    return false;
  }

  /**
   * Once `winner` is corroborated, the claims it contradicts (another geometry, or a piece hash that
   * differs): their members, for the caller to forget; complete ones are liars and are excluded here.
   */
  contradicted(winner: Claim<C>): { readonly agentId: string; readonly complete: boolean }[] {
    if (winner.completeNodes < CORROBORATING_NODES) return [];
    const out: { agentId: string; complete: boolean }[] = [];
    for (const claim of this.claims) {
      if (claim === winner || !contradicts(winner, claim)) continue;
      for (const [agentId, holding] of claim.holders.holdings()) {
        out.push({ agentId, complete: holding.complete });
        if (holding.complete) (this.excluded ??= new Set()).add(agentId);
      }
    }
    return out;
  }
}

function sameGeometry<C>(claim: Claim<C>, a: { readonly size: number; readonly pieceSize: number }): boolean {
  return claim.size === a.size && claim.pieceSize === a.pieceSize;
}

/** Pieces whose hash both the claim and `hashes` know, and which differ. */
function conflicts<C>(claim: Claim<C>, hashes: Hashes): number {
  let n = 0;
  for (let i = 0; i < hashes.indices.length; i++) {
    const index = hashes.indices[i] ?? 0;
    if (((claim.knownBits[index >> 3] ?? 0) & (1 << (index & 7))) === 0) continue;
    if (!equalAt(claim.hashBytes, index * PIECE_HASH_BYTES, hashes.bytes, i * PIECE_HASH_BYTES)) n++;
  }
  return n;
}

function contradicts<C>(a: Claim<C>, b: Claim<C>): boolean {
  if (!sameGeometry(a, b)) return true;
  for (let index = 0; index < a.pieceCount; index++) {
    const bit = 1 << (index & 7);
    if (((a.knownBits[index >> 3] ?? 0) & bit) === 0 || ((b.knownBits[index >> 3] ?? 0) & bit) === 0) continue;
    const offset = index * PIECE_HASH_BYTES;
    if (!equalAt(a.hashBytes, offset, b.hashBytes, offset)) return true;
  }
  return false;
}

/** The claim's hashes of the pieces `holding` has that `fresh` does not name: what a leaving member takes along. */
function carriedHashes<C>(claim: Claim<C>, holding: Holding | undefined, fresh: Hashes): Hashes {
  if (holding === undefined) return NO_HASHES;
  const named = new Uint8Array(claim.pieceCount);
  for (let i = 0; i < fresh.indices.length; i++) named[fresh.indices[i] ?? 0] = 1;
  const indices: number[] = [];
  for (let index = 0; index < claim.pieceCount; index++) {
    const bit = 1 << (index & 7);
    if (named[index] === 1 || ((claim.knownBits[index >> 3] ?? 0) & bit) === 0) continue;
    if (!holding.complete && ((holding.bitmap?.[index >> 3] ?? 0) & (0x80 >> (index & 7))) === 0) continue;
    indices.push(index);
  }
  const bytes = new Uint8Array(indices.length * PIECE_HASH_BYTES);
  indices.forEach((index, i) => {
    bytes.set(claim.hashBytes.subarray(index * PIECE_HASH_BYTES, (index + 1) * PIECE_HASH_BYTES), i * PIECE_HASH_BYTES);
  });
  return { indices, bytes };
}

/** Both lists of hashes in one, `a` first. */
export function joinHashes(a: Hashes, b: Hashes): Hashes {
  if (a.indices.length === 0) return b;
  if (b.indices.length === 0) return a;
  const indices = new Uint32Array(a.indices.length + b.indices.length);
  indices.set(Array.from(a.indices));
  indices.set(Array.from(b.indices), a.indices.length);
  const bytes = new Uint8Array(a.bytes.length + b.bytes.length);
  bytes.set(a.bytes);
  bytes.set(b.bytes, a.bytes.length);
  return { indices, bytes };
}

function compareKeys(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < a.length; i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** Whether the 32-byte hashes at `ao` in `a` and at `bo` in `b` are equal. */
function equalAt(a: Uint8Array, ao: number, b: Uint8Array, bo: number): boolean {
  for (let i = 0; i < PIECE_HASH_BYTES; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}
