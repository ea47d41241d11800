import type { TagKey, TagRecord } from "./tracker.js";

/** Tags remembered cluster-wide; beyond this the least recently published are forgotten (~30 MB). */
export const MAX_TAG_RECORDS = 100_000;

/**
 * The newest digest published for each tag, bounded by count with least-recently-published eviction.
 * Records outlive the agent that published them: they are hints (a digest to look up), not holdings.
 */
export class TagDirectory {
  private readonly records = new Map<string, TagRecord>();

  constructor(private readonly maxRecords = MAX_TAG_RECORDS) {}

  get size(): number {
    return this.records.size;
  }

  /** Keeps `record` unless a newer one of the same tag is known. `nowMs` caps clocks running ahead. */
  record(record: TagRecord, nowMs: number): void {
    const key = keyOf(record);
    const stamped = record.seenAtMs > nowMs ? { ...record, seenAtMs: nowMs } : record;
    const known = this.records.get(key);
    if (known !== undefined && known.seenAtMs > stamped.seenAtMs) return;
    // Re-insertion moves the key to the end of the Map's order: the eviction order is by publication.
    this.records.delete(key);
    this.records.set(key, stamped);
    while (this.records.size > this.maxRecords) {
      const oldest = this.records.keys().next();
      if (oldest.done === true) break;
      this.records.delete(oldest.value);
    }
  }

  resolve(key: TagKey): TagRecord | undefined {
    return this.records.get(keyOf(key));
  }
}

/** One string per tag, the map key on both sides of the tag directory. */
export function keyOf(key: TagKey): string {
  return `${key.registry}/${key.repository}:${key.tag}`;
}
