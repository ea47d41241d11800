import { rankKey } from "./holder-ranking.js";
import type { AgentIdentity, HolderInfo } from "./tracker.js";

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
/**
 * Share of an answer kept for holders in other zones when the asker has a zone. Ranking alone would
 * fill a crowded zone's answer with its own downloaders only.
 */
export const CROSS_ZONE_SHARE = 0.2;

/** One holder as the index keeps it: what it holds, and where it sits in its bucket (O(1) delete). */
interface Entry {
  holding: Holding;
  bucket: Bucket;
  position: number;
}

/** The holders of one (zone, complete) pair, in an array for O(1) uniform random access. */
interface Bucket {
  readonly key: string;
  readonly items: string[];
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
  /** One map entry per holder (memory counts here: a popular blob has thousands). */
  private readonly entries = new Map<string, Entry>();
  private readonly buckets = new Map<string, Bucket>();
  private completeHolders = 0;

  get size(): number {
    return this.entries.size;
  }

  /** Holders with the whole blob. */
  get completeCount(): number {
    return this.completeHolders;
  }

  get(agentId: string): Holding | undefined {
    return this.entries.get(agentId)?.holding;
  }

  has(agentId: string): boolean {
    return this.entries.has(agentId);
  }

  *holdings(): IterableIterator<[string, Holding]> {
    for (const [agentId, entry] of this.entries) yield [agentId, entry.holding];
  }

  set(agentId: string, zone: string, holding: Holding): void {
    const key = bucketKey(zone, holding.complete);
    const entry = this.entries.get(agentId);
    if (entry !== undefined && entry.bucket.key === key) {
      entry.holding = holding;
      return;
    }
    this.delete(agentId);
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      bucket = { key, items: [] };
      this.buckets.set(key, bucket);
    }
    this.entries.set(agentId, { holding, bucket, position: bucket.items.length });
    bucket.items.push(agentId);
    if (holding.complete) this.completeHolders++;
  }

  delete(agentId: string): void {
    const entry = this.entries.get(agentId);
    if (entry === undefined) return;
    this.entries.delete(agentId);
    if (entry.holding.complete) this.completeHolders--;
    const { items } = entry.bucket;
    const last = items.pop();
    if (last !== undefined && last !== agentId) {
      items[entry.position] = last;
      const moved = this.entries.get(last);
      if (moved !== undefined) moved.position = entry.position;
    }
    if (items.length === 0) this.buckets.delete(entry.bucket.key);
  }

  /** The agent's zone changed: its holding moves to the bucket of the new zone. */
  rezone(agentId: string, zone: string): void {
    const entry = this.entries.get(agentId);
    if (entry !== undefined) this.set(agentId, zone, entry.holding);
  }

  /**
   * The best `limit` holders for `asker`, ranked (holder-ranking.ts). Candidates are every holder of
   * each tier (same node, same zone complete, same zone partial, other complete, other partial) while
   * the tier fits, else a random sample of SAMPLE_FACTOR times what is still needed. With fewer holders
   * than that, every holder is a candidate, exactly as an unlimited ranking would see them. Answers
   * are built only for the chosen. `sameNode`: the agents registered on the asker's node.
   */
  best(asker: AgentIdentity, limit: number, sameNode: Iterable<string>, view: AgentView, random: () => number): HolderInfo[] {
    const picked: { readonly holding: Holding; readonly agent: NonNullable<ReturnType<AgentView>>; readonly key: number }[] = [];
    const taken = new Set<string>([asker.agentId]);
    const consider = (agentId: string): void => {
      if (taken.has(agentId)) return;
      taken.add(agentId);
      const holding = this.entries.get(agentId)?.holding;
      const agent = view(agentId);
      if (holding === undefined || agent === undefined) return;
      picked.push({
        holding,
        agent,
        key: rankKey(asker, agent.identity, holding.complete, agent.activeUploads, holding.heldPieces) + random(),
      });
    };
    for (const agentId of sameNode) if (this.entries.has(agentId)) consider(agentId);
    const local = asker.zone === "" ? [] : [asker.zone];
    const take = (tier: readonly Bucket[], need: number): void => {
      const size = tier.reduce((sum, bucket) => sum + bucket.items.length, 0);
      if (size <= need * SAMPLE_FACTOR) {
        for (const bucket of tier) for (const agentId of bucket.items) consider(agentId);
      } else {
        for (const agentId of sample(tier, size, need * SAMPLE_FACTOR, random)) consider(agentId);
      }
    };
    // Places kept for other zones: without them a crowded zone's answer is all its own downloaders,
    // which may lack exactly what only another zone has (the grantee's zone holds the first copies).
    let reserved: typeof picked = [];
    if (asker.zone !== "") {
      const places = Math.floor(limit * CROSS_ZONE_SHARE);
      const from = picked.length;
      for (const complete of [true, false]) {
        const need = places - (picked.length - from);
        if (need > 0)
          take(
            this.bucketsWhere((zone, c) => c === complete && zone !== asker.zone),
            need,
          );
      }
      reserved = picked.splice(from).sort((a, b) => a.key - b.key);
      for (const unused of reserved.splice(places)) taken.delete(unused.agent.identity.agentId);
    }
    const tiers: Bucket[][] = [
      this.bucketsWhere((zone, complete) => complete && local.includes(zone)),
      this.bucketsWhere((zone, complete) => !complete && local.includes(zone)),
      this.bucketsWhere((zone, complete) => complete && !local.includes(zone)),
      this.bucketsWhere((zone, complete) => !complete && !local.includes(zone)),
    ];
    for (const tier of tiers) {
      const need = limit - picked.length - reserved.length;
      if (need <= 0) break;
      take(tier, need);
    }
    picked.sort((a, b) => a.key - b.key);
    const chosen = [...picked.slice(0, limit - reserved.length), ...reserved].sort((a, b) => a.key - b.key);
    return chosen.map(({ holding, agent }) => ({
      ...agent.identity,
      complete: holding.complete,
      bitmap: holding.bitmap ?? EMPTY,
      activeUploads: agent.activeUploads,
    }));
  }

  private bucketsWhere(accept: (zone: string, complete: boolean) => boolean): Bucket[] {
    const chosen: Bucket[] = [];
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
function sample(buckets: readonly Bucket[], size: number, count: number, random: () => number): string[] {
  const positions = new Set<number>();
  while (positions.size < count) positions.add(Math.floor(random() * size));
  const chosen: string[] = [];
  for (let position of positions) {
    for (const bucket of buckets) {
      if (position < bucket.items.length) {
        const item = bucket.items[position];
        if (item !== undefined) chosen.push(item);
        break;
      }
      position -= bucket.items.length;
    }
  }
  return chosen;
}
