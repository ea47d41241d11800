import { PIECE_HASH_BYTES } from "../piece/index.js";
import type { Claim } from "./blob-claims.js";

/**
 * Pieces of the hash lists lookups answer with, cached for all blobs together (a list costs ~130 bytes
 * a piece, its wire form as much again): enough for every blob a cluster pulls at once.
 */
const ANSWER_CACHE_PIECES = 131_072;

/** A claim's piece hashes as a lookup answers with them: one entry a piece, undefined where unknown. */
export type HashList = readonly (Uint8Array | undefined)[];

/**
 * The hash lists lookups answer with: one shared list (callers only read it) per claim looked up
 * recently, at most ANSWER_CACHE_PIECES pieces for all claims together, least recently used first out.
 * A claim whose hashes change, or that goes, must be forgotten here.
 */
export class AnswerCache<C> {
  /** Least recently used first. */
  private readonly lists = new Map<Claim<C>, HashList>();
  private pieces = 0;

  /** The hash list of `claim`, from the cache or made and cached now. */
  answer(claim: Claim<C>): HashList {
    let list = this.lists.get(claim);
    if (list !== undefined) {
      this.lists.delete(claim);
      this.lists.set(claim, list);
      return list;
    }
    list = Array.from({ length: claim.pieceCount }, (_, i) =>
      ((claim.knownBits[i >> 3] ?? 0) & (1 << (i & 7))) === 0
        ? undefined
        : claim.hashBytes.subarray(i * PIECE_HASH_BYTES, (i + 1) * PIECE_HASH_BYTES),
    );
    this.lists.set(claim, list);
    this.pieces += list.length;
    for (const [cached, cachedList] of this.lists) {
      if (this.pieces <= ANSWER_CACHE_PIECES || cached === claim) break;
      this.lists.delete(cached);
      this.pieces -= cachedList.length;
    }
    return list;
  }

  /** Drops the cached list of `claim`: its hashes changed, or it is gone. */
  forget(claim: Claim<C>): void {
    const list = this.lists.get(claim);
    if (list === undefined) return;
    this.lists.delete(claim);
    this.pieces -= list.length;
  }
}
