/** A same-zone agent downloading the same blob, as CrossZoneShare sees it. */
export interface ZoneSibling {
  /** rendezvousSeed of its agent id. */
  readonly seed: number;
  /** When it was first seen or last seen holding more pieces than before (ms, performance.now). */
  readonly grewAtMs: number;
}

/** Owner marks in CrossZoneShare's cache (seeds are 0..2^32-1). */
const SELF = -1;
const UNKNOWN = -2;

/**
 * Which pieces of a blob this agent fetches from other zones while same-zone agents download it too.
 *
 * Agents of one zone downloading the same blob split the pieces that nobody in the zone holds yet by
 * rendezvous hashing of (agent id, piece): each fetches its own share across zones and takes the rest
 * from its zone peers once they hold it, so a zone receives about one copy across zones instead of one
 * per agent. Every agent computes the same split from the same tracker answer without talking to the
 * others, and a sibling joining or leaving moves only its own share.
 *
 * A piece left to a sibling is fetched anyway once it has been available in another zone for
 * `siblingWaitMs` while that sibling has not gained a piece for as long (it is gone, stuck, or no longer
 * downloading): speed degrades, never completion. A sibling that keeps gaining pieces is waited for,
 * however slow the transfers are, because fetching its pieces too would only double the traffic.
 *
 * The same split serves fresh pieces (SwarmDownload's seed share): a piece only a seed holds (the origin
 * grantee, or a complete holder) is fetched from it by its owner among the agents downloading the blob,
 * and the others take it from that owner, as BitTorrent's super-seeding does.
 */
export class CrossZoneShare {
  /** Per piece: when it was first seen available in another zone while a sibling had it to fetch (0: not yet). */
  private readonly waitingSinceMs: Float64Array;
  private readonly selfSeed: number | undefined;
  /**
   * Per piece: the seed of its owner (SELF for this agent), computed on first use and kept while the set
   * of siblings stays the same, so a scheduling pass costs O(1) per piece asked about, not O(siblings).
   */
  private readonly owners: Float64Array;
  private siblingsBySeed = new Map<number, ZoneSibling>();
  /** The sorted seeds of the siblings the owners were computed for. */
  private siblingKey = "";

  /** `selfAgentId` undefined: this agent does not know its tracker identity and fetches every piece itself. */
  constructor(
    pieceCount: number,
    selfAgentId: string | undefined,
    private readonly siblingWaitMs: number,
  ) {
    this.waitingSinceMs = new Float64Array(pieceCount);
    this.owners = new Float64Array(pieceCount).fill(UNKNOWN);
    this.selfSeed = selfAgentId === undefined ? undefined : rendezvousSeed(selfAgentId);
  }

  /** The same-zone agents still downloading the blob; set before each scheduling pass. */
  setSiblings(siblings: readonly ZoneSibling[]): void {
    this.siblingsBySeed = new Map(siblings.map((s) => [s.seed, s]));
    const key = [...this.siblingsBySeed.keys()].sort((a, b) => a - b).join(",");
    if (key === this.siblingKey) return;
    this.siblingKey = key;
    this.owners.fill(UNKNOWN);
  }

  /**
   * Whether this agent should fetch piece `index` (held by nobody in its zone) from another zone now.
   * `available`: a peer in another zone holds it now, which starts the sibling's grace period; a relay
   * (a piece still arriving there) does not.
   */
  mayFetch(index: number, nowMs: number, available: boolean): boolean {
    const owner = this.ownerOf(index);
    if (owner === undefined) return true;
    const since = this.waitingSinceMs[index] ?? 0;
    if (since === 0) {
      if (available) this.waitingSinceMs[index] = Math.max(nowMs, Number.MIN_VALUE);
      return false;
    }
    return nowMs - since >= this.siblingWaitMs && nowMs - owner.grewAtMs >= this.siblingWaitMs;
  }

  /** Whether piece `index` is the share of the sibling with rendezvous seed `seed`. */
  ownedBy(index: number, seed: number): boolean {
    return this.ownerOf(index)?.seed === seed;
  }

  /**
   * The sibling whose share piece `index` is (it fetches it from another zone), or undefined when it is
   * this agent's: the highest score among this agent and its siblings. On a tie this agent yields, so a
   * tied piece waits for the grace period.
   */
  private ownerOf(index: number): ZoneSibling | undefined {
    if (this.selfSeed === undefined || this.siblingsBySeed.size === 0) return undefined;
    let owner = this.owners[index] ?? SELF;
    if (owner === UNKNOWN) {
      owner = SELF;
      let bestScore = rendezvousScore(this.selfSeed, index);
      for (const seed of this.siblingsBySeed.keys()) {
        const score = rendezvousScore(seed, index);
        if (score > bestScore || (owner === SELF && score === bestScore)) {
          owner = seed;
          bestScore = score;
        }
      }
      this.owners[index] = owner;
    }
    return owner === SELF ? undefined : this.siblingsBySeed.get(owner);
  }
}

/** A 32-bit FNV-1a hash of an agent id: the same on every agent, computed once per peer. */
export function rendezvousSeed(agentId: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < agentId.length; i++) {
    hash ^= agentId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

/** The weight of (agent, piece): MurmurHash3's finalizer over the seed mixed with the piece index. */
export function rendezvousScore(seed: number, index: number): number {
  let h = (seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
