import { setTimeout as sleep } from "node:timers/promises";
import type { Digest } from "../oci/index.js";
import type { IndexedBlob } from "./blob-index.js";
import { type BlobStoreBaseOptions, BlobStoreBase, type KeptPartial } from "./blob-store-base.js";
import { StoreError } from "./errors.js";
import type { BlobInfo } from "./blob-store.js";
import type { PartialBackend, PartialSnapshot, PublishedPieceHashes } from "./partial-backend.js";
import type { RangeSource } from "./range-readable.js";

export interface MemoryBlobStoreOptions {
  /** 0 = unlimited (the default). */
  readonly quotaBytes?: number | undefined;
  readonly highWatermark?: number | undefined;
  readonly lowWatermark?: number | undefined;
  readonly logger?: BlobStoreBaseOptions["logger"];
  readonly now?: (() => number) | undefined;
  /** Partials of at least this many bytes hash in a worker thread (default HASH_WORKER_MIN_BYTES). */
  readonly hashWorkerMinBytes?: number | undefined;
  /** Every partial of that size hashes in the worker, not only those opened `sequential` (tests of the worker path). */
  readonly hashAllInWorker?: boolean | undefined;
  /** Publishing a verified blob (commit's durability step) takes this long: a busy disk's fsync (tests). */
  readonly publishDelayMs?: number | undefined;
}

interface KeptMemoryPartial extends KeptPartial {
  readonly buffer: Buffer;
}

/** Holds a partial in one Buffer of the blob's size; publishing hands the Buffer to the store. */
class MemoryPartialBackend implements PartialBackend {
  readonly persistent = false;

  constructor(
    readonly buffer: Buffer,
    private readonly onPublish: (buffer: Buffer, pieceHashes: PublishedPieceHashes | undefined) => void,
    private readonly publishDelayMs: number,
  ) {}

  write(offset: number, data: Uint8Array): Promise<void> {
    this.buffer.set(data, offset);
    return Promise.resolve();
  }

  readInto(target: Uint8Array, offset: number): Promise<void> {
    return copyInto(this.buffer, target, offset);
  }

  persist(_snapshot: PartialSnapshot): Promise<void> {
    return Promise.resolve();
  }

  async publish(pieceHashes: PublishedPieceHashes | undefined): Promise<void> {
    if (this.publishDelayMs > 0) await sleep(this.publishDelayMs);
    this.onPublish(this.buffer, pieceHashes);
  }

  discard(): Promise<void> {
    return Promise.resolve();
  }

  keep(_snapshot: PartialSnapshot): Promise<void> {
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/**
 * BlobStore in memory, for tests of other packages. Same contract as DiskBlobStore (quota, LRU, pinning,
 * tailing readers, final byte held back until verified); partials aborted with keepData can be resumed
 * for the lifetime of the object.
 */
export class MemoryBlobStore extends BlobStoreBase<KeptMemoryPartial, MemoryPartialBackend> {
  private readonly contents = new Map<Digest, Buffer>();
  private readonly hashes = new Map<Digest, PublishedPieceHashes>();

  private readonly publishDelayMs: number;

  constructor(options: MemoryBlobStoreOptions = {}) {
    super(options);
    this.publishDelayMs = options.publishDelayMs ?? 0;
  }

  protected createBackend(
    digest: Digest,
    size: number,
    _pieceSize: number,
    _mediaType: string | undefined,
    kept: KeptMemoryPartial | undefined,
  ): Promise<{ backend: MemoryPartialBackend; resume?: PartialSnapshot }> {
    const backend = new MemoryPartialBackend(
      kept?.buffer ?? Buffer.alloc(size),
      (buffer, pieceHashes) => {
        this.contents.set(digest, buffer);
        if (pieceHashes === undefined) this.hashes.delete(digest);
        else this.hashes.set(digest, pieceHashes);
      },
      this.publishDelayMs,
    );
    return Promise.resolve(
      kept === undefined ? { backend } : { backend, resume: { bitmap: kept.bitmap, appendOffset: kept.appendOffset } },
    );
  }

  protected keptPartial(partial: KeptPartial, backend: MemoryPartialBackend): KeptMemoryPartial {
    return { ...partial, buffer: backend.buffer };
  }

  protected discardKept(_partial: KeptMemoryPartial): Promise<void> {
    return Promise.resolve();
  }

  protected removeBlobData(digest: Digest): Promise<void> {
    this.contents.delete(digest);
    this.hashes.delete(digest);
    return Promise.resolve();
  }

  protected loadPieceHashes(info: BlobInfo): Promise<PublishedPieceHashes | undefined> {
    return Promise.resolve(this.hashes.get(info.digest));
  }

  protected savePieceHashes(digest: Digest, hashes: PublishedPieceHashes): Promise<void> {
    if (this.contents.has(digest)) this.hashes.set(digest, hashes);
    return Promise.resolve();
  }

  protected openBlob(entry: IndexedBlob): Promise<RangeSource> {
    const buffer = this.contents.get(entry.info.digest);
    if (buffer === undefined) return Promise.reject(new StoreError("ERR_STORE_BLOB_NOT_FOUND", `blob ${entry.info.digest} not found`));
    // The stream keeps its own reference: deleting or evicting the blob does not cut a running read.
    return Promise.resolve({
      readInto: (target: Uint8Array, position: number) => copyInto(buffer, target, position),
      close: () => Promise.resolve(),
    });
  }
}

/** Readers get copies: a consumer that mutates its chunk must not change the stored blob. */
function copyInto(buffer: Buffer, target: Uint8Array, offset: number): Promise<void> {
  if (offset < 0 || offset + target.byteLength > buffer.byteLength) {
    return Promise.reject(
      new StoreError("ERR_STORE_IO", `read of ${target.byteLength} bytes at ${offset} passes the end (${buffer.byteLength} bytes)`),
    );
  }
  target.set(buffer.subarray(offset, offset + target.byteLength));
  return Promise.resolve();
}
