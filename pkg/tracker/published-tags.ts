import { keyOf } from "./tag-directory.js";
import type { TagRecord } from "./tracker.js";

/** Tags one agent keeps re-publishing after reconnects; the least recently resolved are dropped beyond this. */
export const MAX_PUBLISHED_TAGS = 10_000;

/**
 * The agent side of the tag directory: the newest record per tag this agent resolved, and which of
 * them the current session has not been sent yet. Bounded by count.
 */
export class PublishedTags {
  private readonly records = new Map<string, TagRecord>();
  private readonly unsent = new Set<string>();

  constructor(private readonly maxRecords = MAX_PUBLISHED_TAGS) {}

  get size(): number {
    return this.records.size;
  }

  add(record: TagRecord): void {
    const key = keyOf(record);
    const known = this.records.get(key);
    if (known !== undefined && known.digest === record.digest && known.seenAtMs >= record.seenAtMs) return;
    this.records.delete(key);
    this.records.set(key, record);
    this.unsent.add(key);
    while (this.records.size > this.maxRecords) {
      const oldest = this.records.keys().next();
      if (oldest.done === true) break;
      this.records.delete(oldest.value);
      this.unsent.delete(oldest.value);
    }
  }

  all(): IterableIterator<TagRecord> {
    return this.records.values();
  }

  /** A new session starts empty on the tracker: everything is to be sent again. */
  markAllUnsent(): void {
    for (const key of this.records.keys()) this.unsent.add(key);
  }

  /** Yields the unsent records, marking each sent as it is taken (stop early to keep the rest). */
  *takeUnsent(): Generator<TagRecord, void, undefined> {
    for (const key of this.unsent) {
      this.unsent.delete(key);
      const record = this.records.get(key);
      if (record !== undefined) yield record;
    }
  }
}
