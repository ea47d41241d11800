import { PIECE_HASH_BYTES } from "../piece/index.js";
import type { BlobClaims, Claim } from "./blob-claims.js";
import type { RoundChanges } from "./blob-watchers.js";
import type { AgentIdentity, BlobChange, HolderInfo } from "./tracker.js";

/**
 * Largest change a notice carries, in bytes of holder bitmaps and piece hashes; a larger one is sent as
 * "look it up". Bounds every notice (a lookup answer of a big blob is larger still) and keeps a round of
 * notices to hundreds of watchers cheap.
 */
export const MAX_NOTICE_DELTA_BYTES = 64 * 1024;
/** Bytes a holder costs a notice besides its bitmap (identity strings, field tags), for MAX_NOTICE_DELTA_BYTES. */
const NOTICE_HOLDER_BYTES = 160;
/** Bytes a piece hash costs a notice: its SHA-256 and its index. */
const NOTICE_HASH_BYTES = PIECE_HASH_BYTES + 4;

const NO_BITMAP = new Uint8Array(0);

/**
 * What a watcher was last told of a blob (by its lookup, then by notices with a change), so that a notice
 * can carry exactly what a lookup would now add: the claim it was answered with and how the answer was
 * chosen (it must still be the one chosen), how many of the claim's hashes it knows, and whether the
 * answer was a sample of a crowd (then notices only say "changed"). `C`: what claims are charged to.
 */
export interface WatchView<C> {
  /** Undefined: the lookup answered with no claim (nobody announced the blob yet). */
  readonly claim: Claim<C> | undefined;
  readonly excluded: ReadonlySet<string>;
  readonly expectedSize: number | undefined;
  /** The claim's revision then (a hash written over bumps it). */
  readonly revision: number;
  /** The answer listed as many holders as an answer holds: a sample of a crowd. */
  readonly crowded: boolean;
  /** The first `hashesTold` of the claim's hash log. */
  hashesTold: number;
  /** A notice to it was dropped since: what it knows is unknown, so notices say "look it up" until its next lookup. */
  stale: boolean;
}

export interface ChangeQuery<C> {
  readonly watcher: string;
  /** The blob's claims now; undefined when nobody holds it any more. */
  readonly claims: BlobClaims<C> | undefined;
  /** The origin grantee now. */
  readonly grantee: string | undefined;
  readonly view: WatchView<C>;
  readonly changes: RoundChanges;
  /** Holders per lookup answer (MemoryTracker's cap). */
  readonly maxLookupHolders: number;
  /** A registered agent's identity and load; undefined without a session. */
  readonly agent: (agentId: string) => { readonly identity: AgentIdentity; readonly activeUploads: number } | undefined;
}

/**
 * What a lookup by the watcher would now add to what it was told (its view), or undefined when that cannot
 * be told exactly and cheaply: the answer was a sample of a crowd (or would be now), another claim would
 * be answered with, a hash was written over, a notice was dropped, more holders changed than a round
 * lists, a changed holder left the claim, or the change is over MAX_NOTICE_DELTA_BYTES. Never more than a
 * lookup would answer: the same claim, chosen the same way, its holders as a lookup lists them.
 */
export function changeFor<C>(query: ChangeQuery<C>): BlobChange | undefined {
  const { watcher, view, changes, grantee } = query;
  if (view.stale || view.crowded || view.claim === undefined || changes.holders === undefined) return undefined;
  const claim = query.claims?.choose(watcher, view.excluded, view.expectedSize, grantee);
  if (claim !== view.claim || claim.revision !== view.revision) return undefined;
  // A lookup lists every holder but the asker while they fit in one answer; past that it samples them.
  if (claim.holders.size - (claim.holders.has(watcher) ? 1 : 0) >= query.maxLookupHolders) return undefined;
  const holders: HolderInfo[] = [];
  let bytes = 0;
  for (const id of changes.holders) {
    if (id === watcher) continue;
    const holding = claim.holders.get(id);
    const member = query.agent(id);
    if (holding === undefined || member === undefined) return undefined;
    holders.push({
      ...member.identity,
      complete: holding.complete,
      bitmap: holding.bitmap ?? NO_BITMAP,
      activeUploads: member.activeUploads,
    });
    bytes += NOTICE_HOLDER_BYTES + (holding.bitmap?.length ?? 0);
  }
  const from = Math.min(view.hashesTold, claim.knownHashes);
  const count = claim.knownHashes - from;
  if (bytes + count * NOTICE_HASH_BYTES > MAX_NOTICE_DELTA_BYTES) return undefined;
  const indices = claim.hashLog.slice(from, claim.knownHashes);
  const hashBytes = new Uint8Array(count * PIECE_HASH_BYTES);
  for (let i = 0; i < count; i++) {
    const index = indices[i] ?? 0;
    hashBytes.set(claim.hashBytes.subarray(index * PIECE_HASH_BYTES, (index + 1) * PIECE_HASH_BYTES), i * PIECE_HASH_BYTES);
  }
  return { size: claim.size, pieceSize: claim.pieceSize, holders, hashes: { indices, bytes: hashBytes }, granteeAgentId: grantee };
}
