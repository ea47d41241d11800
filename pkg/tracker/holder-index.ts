import type { RankCandidate } from "./holder-ranking.js";
import type { AgentIdentity } from "./tracker.js";

/** What one agent holds of one blob. Complete holdings of a blob share one object (memory at thousands of agents). */
export interface Holding {
  readonly complete: boolean;
  readonly bitmap: Uint8Array | undefined;
  readonly heldPieces: number;
}

/**
 * How many holders of a crowded ranking tier are looked at per holder still to be chosen: the best of a
 * random sample this large stands in for the best of the whole tier (the "power of d choices" of load
 * balancing), so a lookup costs O(limit), not O(holders), in a swarm of thousands.
 */
export const SAMPLE_FACTOR = 4;

/** A set with O(1) add, delete and uniform random access (swap-remove array plus position map). */
class IndexedSet {
  readonly items: string[] = [];
  private readonly positions = new Map<string, number>();

  get size(): number {
    return this.items.length;
  }

  add(item: string): void {
    if (this.positions.has(item)) return;
    this.positions.set(item, this.items.length);
    this.items.push(item);
  }

  delete(item: string): void {
    const position = this.positions.get(item);
    if (position === undefined) return;
    this.positions.delete(item);
    const last = this.items.pop();
    if (last !== undefined && last !== item) {
      this.items[position] = last;
      this.positions.set(last, position);
    }
  }
}

/** Looks up the identity and load of a registered agent; undefined when it has no session. */
export type AgentView = (agentId: string) => { readonly identity: AgentIdentity; readonly activeUploads: number } | undefined;

/**
 * The holders of one blob, bucketed by (zone, complete) so that a lookup can collect the best-ranked few
 * for an asker without visiting every holder: the ranking (holder-ranking.ts) puts same node, then same
 * zone, then complete before partial first, and each of those tiers is a union of buckets. Buckets are
 * keyed by the zone the agent had when it announced; MemoryTracker moves them when a zone changes.
 */
export class HolderIndex {
  readonly holdings = new Map<string, Holding>();
  private readonly buckets = new Map<string, IndexedSet>();
  /** Bucket key per holder, so a delete finds its bucket without the (possibly changed) identity. */
  private readonly bucketOf = new Map<string, string>();
  private completeHolders = 0;

  get size(): number {
    return this.holdings.size;
  }

  /** Holders with the whole blob. */
  get completeCount(): number {
    return this.completeHolders;
  }

  get(agentId: string): Holding | undefined {
    return this.holdings.get(agentId);
  }

  has(agentId: string): boolean {
    return this.holdings.has(agentId);
  }

  set(agentId: string, zone: string, holding: Holding): void {
    this.delete(agentId);
    this.holdings.set(agentId, holding);
    if (holding.complete) this.completeHolders++;
    const key = bucketKey(zone, holding.complete);
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      bucket = new IndexedSet();
      this.buckets.set(key, bucket);
    }
    bucket.add(agentId);
    this.bucketOf.set(agentId, key);
  }

  delete(agentId: string): void {
    const holding = this.holdings.get(agentId);
    if (holding === undefined) return;
    this.holdings.delete(agentId);
    if (holding.complete) this.completeHolders--;
    const key = this.bucketOf.get(agentId);
    this.bucketOf.delete(agentId);
    const bucket = key === undefined ? undefined : this.buckets.get(key);
    if (key === undefined || bucket === undefined) return;
    bucket.delete(agentId);
    if (bucket.size === 0) this.buckets.delete(key);
  }

  /** The agent's zone changed: its holding moves to the bucket of the new zone. */
  rezone(agentId: string, zone: string): void {
    const holding = this.holdings.get(agentId);
    if (holding !== undefined) this.set(agentId, zone, holding);
  }

  /**
   * Candidates for ranking for `asker`, at most about `limit` of them plus the same-node ones: every
   * holder of each tier (same node, same zone complete, same zone partial, other complete, other partial)
   * while the tier fits, else a random sample of SAMPLE_FACTOR times what is still needed. With fewer
   * holders than that, every holder is a candidate, exactly as an unlimited ranking would see them.
   * `sameNode`: the agents registered on the asker's node.
   */
  candidates(asker: AgentIdentity, limit: number, sameNode: Iterable<string>, view: AgentView, random: () => number): RankCandidate[] {
    const out: RankCandidate[] = [];
    const taken = new Set<string>([asker.agentId]);
    const push = (agentId: string): void => {
      if (taken.has(agentId)) return;
      taken.add(agentId);
      const holding = this.holdings.get(agentId);
      const agent = view(agentId);
      if (holding === undefined || agent === undefined) return;
      out.push({
        info: { ...agent.identity, complete: holding.complete, bitmap: holding.bitmap ?? EMPTY, activeUploads: agent.activeUploads },
        heldPieces: holding.heldPieces,
      });
    };
    for (const agentId of sameNode) if (this.holdings.has(agentId)) push(agentId);
    const local = asker.zone === "" ? [] : [asker.zone];
    const tiers: IndexedSet[][] = [
      this.bucketsWhere((zone, complete) => complete && local.includes(zone)),
      this.bucketsWhere((zone, complete) => !complete && local.includes(zone)),
      this.bucketsWhere((zone, complete) => complete && !local.includes(zone)),
      this.bucketsWhere((zone, complete) => !complete && !local.includes(zone)),
    ];
    for (const tier of tiers) {
      const need = limit - out.length;
      if (need <= 0) break;
      const size = tier.reduce((sum, bucket) => sum + bucket.size, 0);
      if (size <= need * SAMPLE_FACTOR) {
        for (const bucket of tier) for (const agentId of bucket.items) push(agentId);
      } else {
        for (const agentId of sample(tier, size, need * SAMPLE_FACTOR, random)) push(agentId);
      }
    }
    return out;
  }

  private bucketsWhere(accept: (zone: string, complete: boolean) => boolean): IndexedSet[] {
    const chosen: IndexedSet[] = [];
    for (const [key, bucket] of this.buckets) {
      const separator = key.lastIndexOf("\0");
      if (accept(key.slice(0, separator), key.slice(separator + 1) === "1")) chosen.push(bucket);
    }
    return chosen;
  }
}

const EMPTY = new Uint8Array(0);

function bucketKey(zone: string, complete: boolean): string {
  return `${zone}\0${complete ? "1" : "0"}`;
}

/** `count` distinct members (count < size) of the union of `buckets`, uniformly at random. */
function sample(buckets: readonly IndexedSet[], size: number, count: number, random: () => number): string[] {
  const positions = new Set<number>();
  while (positions.size < count) positions.add(Math.floor(random() * size));
  const chosen: string[] = [];
  for (let position of positions) {
    for (const bucket of buckets) {
      if (position < bucket.size) {
        const item = bucket.items[position];
        if (item !== undefined) chosen.push(item);
        break;
      }
      position -= bucket.size;
    }
  }
  return chosen;
}
