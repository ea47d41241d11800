import type { Logger } from "pino";
import type { Digest } from "../oci/index.js";
import type { BlobInfo, StoreEvent } from "./blob-store.js";
import { StoreError } from "./errors.js";

export const DEFAULT_HIGH_WATERMARK = 0.9;
export const DEFAULT_LOW_WATERMARK = 0.8;

export interface QuotaOptions {
  /** 0 = unlimited. */
  readonly quotaBytes?: number | undefined;
  /** Fraction of the quota above which eviction starts. */
  readonly highWatermark?: number | undefined;
  /** Fraction of the quota eviction brings usage down to. */
  readonly lowWatermark?: number | undefined;
}

/** One complete blob as the store tracks it. */
export interface IndexedBlob {
  readonly info: BlobInfo;
  /** Last createReadStream (or commit, or file mtime at rescan), in the store's clock. */
  lastUsedMs: number;
  /** Last use written to disk (file mtime), so the LRU order survives a restart without a write per read. */
  persistedUseMs: number;
  /** Tie-breaker for equal timestamps: insertion order. */
  readonly seq: number;
  /** Open read streams; a pinned blob is never evicted. */
  pins: number;
  /** False for blobs found on disk at start-up until their content has been hashed. */
  verified: boolean;
}

/**
 * The in-memory index of complete blobs plus the quota accounting shared by every store implementation:
 * bytes of blobs, bytes reserved by open partials, and least-recently-used eviction between watermarks.
 * All decisions are synchronous, so concurrent callers never evict or reserve the same bytes twice; the
 * caller removes the evicted blobs' data afterwards.
 */
export class BlobIndex {
  readonly quotaBytes: number;
  private readonly highBytes: number;
  private readonly lowBytes: number;
  private readonly blobs = new Map<Digest, IndexedBlob>();
  private blobBytes = 0;
  private reservedBytes = 0;
  private nextSeq = 0;

  constructor(
    options: QuotaOptions,
    private readonly now: () => number,
  ) {
    const quota = options.quotaBytes ?? 0;
    const high = options.highWatermark ?? DEFAULT_HIGH_WATERMARK;
    const low = options.lowWatermark ?? DEFAULT_LOW_WATERMARK;
    if (!Number.isSafeInteger(quota) || quota < 0) throw invalid(`quotaBytes must be a non-negative integer, got ${String(quota)}`);
    if (!(high > 0 && high <= 1)) throw invalid(`highWatermark must be in (0, 1], got ${String(high)}`);
    if (!(low > 0 && low <= high)) throw invalid(`lowWatermark must be in (0, highWatermark], got ${String(low)}`);
    this.quotaBytes = quota;
    this.highBytes = Math.floor(quota * high);
    this.lowBytes = Math.floor(quota * low);
  }

  get usedBytes(): number {
    return this.blobBytes + this.reservedBytes;
  }

  get count(): number {
    return this.blobs.size;
  }

  get(digest: Digest): IndexedBlob | undefined {
    return this.blobs.get(digest);
  }

  entries(): IndexedBlob[] {
    return [...this.blobs.values()];
  }

  add(info: BlobInfo, options: { lastUsedMs?: number; verified: boolean }): IndexedBlob {
    const previous = this.blobs.get(info.digest);
    if (previous !== undefined) this.remove(info.digest);
    const lastUsedMs = options.lastUsedMs ?? this.now();
    const entry: IndexedBlob = { info, lastUsedMs, persistedUseMs: lastUsedMs, seq: this.nextSeq++, pins: 0, verified: options.verified };
    this.blobs.set(info.digest, entry);
    this.blobBytes += info.size;
    return entry;
  }

  remove(digest: Digest): IndexedBlob | undefined {
    const entry = this.blobs.get(digest);
    if (entry === undefined) return undefined;
    this.blobs.delete(digest);
    this.blobBytes -= entry.info.size;
    return entry;
  }

  /** Removes exactly this entry (not a newer blob stored under the same digest since). */
  removeEntry(entry: IndexedBlob): boolean {
    if (this.blobs.get(entry.info.digest) !== entry) return false;
    this.remove(entry.info.digest);
    return true;
  }

  touch(entry: IndexedBlob): void {
    entry.lastUsedMs = this.now();
  }

  /** Pins against eviction; the returned function unpins (idempotent). */
  pin(entry: IndexedBlob): () => void {
    entry.pins++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      entry.pins--;
    };
  }

  /**
   * Reserves `bytes` for a partial. Throws ERR_STORE_QUOTA_EXCEEDED (evicting nothing) when even evicting
   * every unpinned blob would not make it fit. Returns the blobs evicted to get back under the watermarks.
   */
  reserve(bytes: number): IndexedBlob[] {
    if (this.quotaBytes > 0 && this.usedBytes + bytes > this.quotaBytes) {
      const evictable = this.candidates().reduce((sum, entry) => sum + entry.info.size, 0);
      if (this.usedBytes - evictable + bytes > this.quotaBytes) {
        throw new StoreError(
          "ERR_STORE_QUOTA_EXCEEDED",
          `${bytes} bytes do not fit: ${this.usedBytes} of ${this.quotaBytes} bytes used, ${evictable} evictable`,
        );
      }
    }
    this.reservedBytes += bytes;
    return this.evictOverHigh();
  }

  release(bytes: number): void {
    this.reservedBytes = Math.max(0, this.reservedBytes - bytes);
  }

  /** Turns a partial's reservation into a complete blob; the new blob itself is never evicted by this call. */
  commitReservation(bytes: number, info: BlobInfo): { entry: IndexedBlob; evicted: IndexedBlob[] } {
    this.release(bytes);
    const entry = this.add(info, { verified: true });
    return { entry, evicted: this.evictOverHigh(entry) };
  }

  /** When usage is above the high watermark, evicts least-recently-used unpinned blobs down to the low one. */
  evictOverHigh(exclude?: IndexedBlob): IndexedBlob[] {
    if (this.quotaBytes === 0 || this.usedBytes <= this.highBytes) return [];
    const evicted: IndexedBlob[] = [];
    for (const entry of this.candidates()) {
      if (this.usedBytes <= this.lowBytes) break;
      if (entry === exclude) continue;
      this.remove(entry.info.digest);
      evicted.push(entry);
    }
    return evicted;
  }

  /** Unpinned blobs, least recently used first. */
  private candidates(): IndexedBlob[] {
    return [...this.blobs.values()].filter((entry) => entry.pins === 0).sort((a, b) => a.lastUsedMs - b.lastUsedMs || a.seq - b.seq);
  }
}

/** Synchronous fan-out of store events; a throwing listener is logged and does not disturb the others. */
export class StoreEvents {
  private readonly listeners = new Set<{ readonly fn: (event: StoreEvent) => void }>();

  constructor(private readonly logger: Logger | undefined) {}

  subscribe(listener: (event: StoreEvent) => void): () => void {
    const slot = { fn: listener };
    this.listeners.add(slot);
    return () => {
      this.listeners.delete(slot);
    };
  }

  emit(event: StoreEvent): void {
    for (const slot of [...this.listeners]) {
      try {
        slot.fn(event);
      } catch (error: unknown) {
        this.logger?.error({ err: error, event: event.type }, "store event listener threw");
      }
    }
  }
}

function invalid(message: string): StoreError {
  return new StoreError("ERR_STORE_INVALID_ARGUMENT", message);
}
