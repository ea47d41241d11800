import type { Digest } from "../oci/index.js";

/** Where a tag last pointed, remembered so pulls by tag keep working while the upstream is down. */
export interface TagRecord {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly size: number;
  /** Unix milliseconds when the upstream last confirmed it. */
  readonly seenAt: number;
}

/** Last-seen digests per (registry, repository, tag). Implementations: DiskTagStore, MemoryTagStore. */
export interface TagStore {
  get(registry: string, name: string, tag: string): TagRecord | undefined;
  set(registry: string, name: string, tag: string, record: TagRecord): void;
  /** Writes pending changes durably. */
  flush(): Promise<void>;
  close(): Promise<void>;
}
