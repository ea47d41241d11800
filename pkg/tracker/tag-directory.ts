import type { TagKey, TagRecord } from "./tracker.js";

/** Tags remembered cluster-wide; beyond this the least recently published are forgotten. */
export const MAX_TAG_RECORDS = 100_000;
/** Publishers remembered per tag; beyond this the oldest record of the tag is forgotten. */
export const MAX_PUBLISHERS_PER_TAG = 32;

/** One agent's record of a tag, and the node it runs on. */
interface Published {
  readonly record: TagRecord;
  readonly node: string;
}

/**
 * What the agents resolved tags to at their registries: one record per agent and tag, kept while the
 * agent's session lasts (agents re-send theirs after every reconnect). A record is a claim, not truth:
 * `resolve` answers the digest that the most distinct nodes report (the newest record breaks ties), so
 * one member cannot move a tag that others resolved, and its records leave with it. Bounded by count,
 * least recently published first out.
 */
export class TagDirectory {
  private readonly tags = new Map<string, Map<string, Published>>();
  /** Tag keys each agent published, to forget them with it. */
  private readonly byAgent = new Map<string, Set<string>>();

  constructor(private readonly maxTags = MAX_TAG_RECORDS) {}

  /** Tags known. */
  get size(): number {
    return this.tags.size;
  }

  /**
   * Keeps `agentId`'s record (on `node`) unless it already has a newer one of the same tag. `nowMs` caps
   * clocks running ahead.
   */
  record(agentId: string, node: string, record: TagRecord, nowMs: number): void {
    const key = keyOf(record);
    const stamped = record.seenAtMs > nowMs ? { ...record, seenAtMs: nowMs } : record;
    const publishers = this.tags.get(key) ?? new Map<string, Published>();
    const known = publishers.get(agentId);
    if (known !== undefined && known.record.seenAtMs > stamped.seenAtMs) return;
    publishers.delete(agentId);
    publishers.set(agentId, { record: stamped, node });
    for (const oldest of publishers.keys()) {
      if (publishers.size <= MAX_PUBLISHERS_PER_TAG) break;
      publishers.delete(oldest);
      this.byAgent.get(oldest)?.delete(key);
    }
    // Re-insertion moves the tag to the end of the Map's order: eviction is by publication.
    this.tags.delete(key);
    this.tags.set(key, publishers);
    const mine = this.byAgent.get(agentId) ?? new Set<string>();
    mine.add(key);
    this.byAgent.set(agentId, mine);
    for (const [oldest, dropped] of this.tags) {
      if (this.tags.size <= this.maxTags) break;
      this.tags.delete(oldest);
      for (const publisher of dropped.keys()) this.byAgent.get(publisher)?.delete(oldest);
    }
  }

  /** Forgets every record `agentId` published (its session ended). */
  forget(agentId: string): void {
    for (const key of this.byAgent.get(agentId) ?? []) {
      const publishers = this.tags.get(key);
      publishers?.delete(agentId);
      if (publishers?.size === 0) this.tags.delete(key);
    }
    this.byAgent.delete(agentId);
  }

  /** The digest the most distinct nodes report for the tag (the newest record breaks ties); undefined when none. */
  resolve(key: TagKey): TagRecord | undefined {
    const publishers = this.tags.get(keyOf(key));
    if (publishers === undefined) return undefined;
    const byDigest = new Map<string, { nodes: Set<string>; newest: TagRecord }>();
    for (const { record, node } of publishers.values()) {
      const entry = byDigest.get(record.digest);
      if (entry === undefined) byDigest.set(record.digest, { nodes: new Set([node]), newest: record });
      else {
        entry.nodes.add(node);
        if (record.seenAtMs > entry.newest.seenAtMs) entry.newest = record;
      }
    }
    let best: { nodes: Set<string>; newest: TagRecord } | undefined;
    for (const entry of byDigest.values()) {
      if (
        best === undefined ||
        entry.nodes.size > best.nodes.size ||
        (entry.nodes.size === best.nodes.size && entry.newest.seenAtMs > best.newest.seenAtMs)
      ) {
        best = entry;
      }
    }
    return best?.newest;
  }
}

/** One string per tag, the map key on both sides of the tag directory. */
export function keyOf(key: TagKey): string {
  return `${key.registry}/${key.repository}:${key.tag}`;
}
