import { isDigest } from "../oci/index.js";
import { StoreError } from "./errors.js";
import type { TagRecord } from "./tag-store.js";

/** Default bound on remembered tags; beyond it the record confirmed longest ago is dropped. */
export const MAX_TAG_RECORDS = 10_000;

/** A tag record together with its key, as persisted. */
export interface StoredTag extends TagRecord {
  readonly registry: string;
  readonly name: string;
  readonly tag: string;
}

/** Whether `value` is a well-formed StoredTag (used on untrusted file content). */
export function isStoredTag(value: unknown): value is StoredTag {
  if (typeof value !== "object" || value === null) return false;
  const record = value as Record<string, unknown>;
  return (
    typeof record.registry === "string" &&
    typeof record.name === "string" &&
    typeof record.tag === "string" &&
    typeof record.digest === "string" &&
    isDigest(record.digest) &&
    typeof record.mediaType === "string" &&
    typeof record.size === "number" &&
    Number.isSafeInteger(record.size) &&
    record.size >= 0 &&
    typeof record.seenAt === "number" &&
    Number.isFinite(record.seenAt)
  );
}

/** The bounded map both tag stores keep in memory. Last write wins. */
export class TagRecords {
  private readonly records = new Map<string, StoredTag>();

  constructor(private readonly maxRecords: number = MAX_TAG_RECORDS) {
    if (!Number.isSafeInteger(maxRecords) || maxRecords < 1) {
      throw new StoreError("ERR_STORE_INVALID_ARGUMENT", `maxRecords must be a positive integer, got ${String(maxRecords)}`);
    }
  }

  get size(): number {
    return this.records.size;
  }

  get(registry: string, name: string, tag: string): TagRecord | undefined {
    const stored = this.records.get(key(registry, name, tag));
    if (stored === undefined) return undefined;
    return { digest: stored.digest, mediaType: stored.mediaType, size: stored.size, seenAt: stored.seenAt };
  }

  set(registry: string, name: string, tag: string, record: TagRecord): void {
    const stored = { registry, name, tag, digest: record.digest, mediaType: record.mediaType, size: record.size, seenAt: record.seenAt };
    if (!isStoredTag(stored)) throw new StoreError("ERR_STORE_INVALID_ARGUMENT", `invalid tag record for ${registry}/${name}:${tag}`);
    this.records.set(key(registry, name, tag), Object.freeze(stored));
    while (this.records.size > this.maxRecords) this.dropOldest();
  }

  values(): StoredTag[] {
    return [...this.records.values()];
  }

  private dropOldest(): void {
    let oldestKey: string | undefined;
    let oldestSeenAt = Infinity;
    for (const [recordKey, record] of this.records) {
      if (record.seenAt < oldestSeenAt) {
        oldestSeenAt = record.seenAt;
        oldestKey = recordKey;
      }
    }
    if (oldestKey !== undefined) this.records.delete(oldestKey);
  }
}

/** Unambiguous for any strings (a separator character could occur inside a name). */
function key(registry: string, name: string, tag: string): string {
  return JSON.stringify([registry, name, tag]);
}
