import { type FileHandle, open, rm, utimes } from "node:fs/promises";
import { resolve } from "node:path";
import type { Logger } from "pino";
import type { Digest } from "../oci/index.js";
import type { IndexedBlob } from "./blob-index.js";
import { BlobStoreBase, type KeptPartial } from "./blob-store-base.js";
import { BackgroundVerifier, fileMatchesDigest } from "./blob-verifier.js";
import type { BlobInfo } from "./blob-store.js";
import { DiskLayout, readExactlyInto } from "./disk-layout.js";
import { blobLockKey, DiskPartialBackend, type DiskPartialParams, partialLockKey } from "./disk-partial-backend.js";
import { rescan } from "./disk-rescan.js";
import { StoreError } from "./errors.js";
import { KeyedMutex } from "./keyed-mutex.js";
import type { PartialSnapshot, PublishedPieceHashes } from "./partial-backend.js";
import { decodePieceHashFile, encodePieceHashFile, maxPieceHashFileBytes } from "./piece-hash-file.js";
import type { RangeSource, RangeVerification } from "./range-readable.js";
import { errnoCode, ioError, raceAbort } from "./store-helpers.js";
import { writeFileAtomic } from "../util/index.js";

/** Default wait before blobs found at start-up are hashed in the background. */
export const VERIFY_START_DELAY_MS = 2000;
/** A blob's file mtime (its LRU time across restarts) is refreshed on use at most this often. */
export const LRU_PERSIST_INTERVAL_MS = 10 * 60 * 1000;

export interface DiskBlobStoreOptions {
  readonly dir: string;
  /** 0 = unlimited (the default). */
  readonly quotaBytes?: number | undefined;
  /** Fraction of the quota above which eviction starts (default 0.9). */
  readonly highWatermark?: number | undefined;
  /** Fraction of the quota eviction brings usage down to (default 0.8). */
  readonly lowWatermark?: number | undefined;
  readonly logger?: Logger | undefined;
  /** Clock in milliseconds (LRU timestamps, file mtimes). */
  readonly now?: (() => number) | undefined;
  /** Wait before the background verifier starts (default VERIFY_START_DELAY_MS). */
  readonly verifyStartDelayMs?: number | undefined;
  /** Minimum interval between two state-file saves of a partial (default STATE_SAVE_INTERVAL_MS). */
  readonly stateSaveIntervalMs?: number | undefined;
  /** Partials of at least this many bytes hash in a worker thread (default HASH_WORKER_MIN_BYTES). */
  readonly hashWorkerMinBytes?: number | undefined;
  /** Every partial of that size hashes in the worker, not only those opened `sequential` (tests of the worker path). */
  readonly hashAllInWorker?: boolean | undefined;
}

/**
 * Content-addressed blob store on a local file system (layout in disk-layout.ts).
 *
 * A blob becomes visible only by a rename after its digest matched (data fsync'd, rename, directory
 * fsync'd). After a restart, blobs found on disk are visible at once but unverified: a background
 * verifier hashes them one at a time and deletes mismatching ones, and until then a read stream hashes
 * the whole blob while it streams and holds back the range's last byte until the digest matched.
 */
export class DiskBlobStore extends BlobStoreBase<KeptPartial, DiskPartialBackend> {
  private readonly layout: DiskLayout;
  private readonly locks = new KeyedMutex();
  private readonly verifier: BackgroundVerifier<IndexedBlob>;
  /** Verifications run for range reads, shared by concurrent readers of the same blob. */
  private readonly verifying = new Map<IndexedBlob, Promise<void>>();
  /** Blobs the verifier tried and could not read (left unverified; readers still verify while streaming). */
  private readonly verifyFailed = new WeakSet<IndexedBlob>();

  private constructor(options: DiskBlobStoreOptions, layout: DiskLayout) {
    super(options);
    this.layout = layout;
    this.verifier = new BackgroundVerifier({
      startDelayMs: options.verifyStartDelayMs ?? VERIFY_START_DELAY_MS,
      next: () => this.index.entries().find((entry) => !entry.verified && !this.verifyFailed.has(entry)),
      verify: (entry, signal) => this.verifyInBackground(entry, signal),
      logger: options.logger,
    });
  }

  /** Opens (creating if needed) the store in `options.dir`, cleaning up and indexing what a previous process left. */
  static async open(options: DiskBlobStoreOptions): Promise<DiskBlobStore> {
    const layout = new DiskLayout(resolve(options.dir));
    const store = new DiskBlobStore(options, layout);
    let found;
    try {
      found = await rescan(layout, options.logger);
    } catch (error: unknown) {
      throw ioError(`scanning blob store ${layout.root}`, error);
    }
    for (const blob of found.blobs) store.index.add(blob.info, { lastUsedMs: blob.mtimeMs, verified: false });
    for (const partial of found.partials) store.kept.set(partial.digest, partial);
    // The quota may have been lowered since the last run.
    await store.dropBlobs(store.index.evictOverHigh(), "evicted");
    options.logger?.info(
      { dir: layout.root, blobs: found.blobs.length, partials: found.partials.length, usedBytes: store.index.usedBytes },
      "blob store opened",
    );
    store.verifier.start();
    return store;
  }

  protected async createBackend(
    digest: Digest,
    size: number,
    pieceSize: number,
    mediaType: string | undefined,
    kept: KeptPartial | undefined,
  ): Promise<{ backend: DiskPartialBackend; resume?: PartialSnapshot }> {
    const params: DiskPartialParams = { digest, size, pieceSize, mediaType };
    const context = { layout: this.layout, locks: this.locks };
    if (kept !== undefined) {
      try {
        const backend = await DiskPartialBackend.resume(context, params);
        return { backend, resume: { bitmap: kept.bitmap, appendOffset: kept.appendOffset } };
      } catch (error: unknown) {
        this.logger?.warn({ err: error, digest }, "cannot resume partial blob; starting over");
      }
    }
    try {
      return { backend: await DiskPartialBackend.create(context, params) };
    } catch (error: unknown) {
      throw ioError(`creating partial blob ${digest}`, error);
    }
  }

  protected keptPartial(partial: KeptPartial): KeptPartial {
    return partial;
  }

  protected discardKept(partial: KeptPartial): Promise<void> {
    return this.locks.run(partialLockKey(partial.digest), async () => {
      try {
        await rm(this.layout.partialDataPath(partial.digest), { force: true });
        await rm(this.layout.partialStatePath(partial.digest), { force: true });
      } catch (error: unknown) {
        throw ioError(`removing partial blob ${partial.digest}`, error);
      }
    });
  }

  protected removeBlobData(digest: Digest): Promise<void> {
    // Under the digest's lock, taken now: a later publish of the same digest waits for this removal.
    return this.locks.run(blobLockKey(digest), async () => {
      try {
        await rm(this.layout.blobPath(digest), { force: true });
        await rm(this.layout.metaPath(digest), { force: true });
        await rm(this.layout.piecesPath(digest), { force: true });
      } catch (error: unknown) {
        throw ioError(`removing blob ${digest}`, error);
      }
    });
  }

  protected async openBlob(entry: IndexedBlob): Promise<RangeSource> {
    const digest = entry.info.digest;
    let handle: FileHandle;
    try {
      handle = await open(this.layout.blobPath(digest), "r");
    } catch (error: unknown) {
      if (errnoCode(error) !== "ENOENT") throw ioError(`opening blob ${digest}`, error);
      // Removed behind the store's back: forget it, so it is not announced any more.
      await this.dropEntry(entry, "corrupt");
      throw new StoreError("ERR_STORE_BLOB_NOT_FOUND", `blob ${digest} not found`, { cause: error });
    }
    // An open file stays readable after eviction or deletion unlinks it: running reads are never cut.
    return {
      readInto: async (target, position) => {
        try {
          await readExactlyInto(handle, target, position);
        } catch (error: unknown) {
          throw ioError(`reading blob ${digest}`, error);
        }
      },
      close: () => handle.close(),
    };
  }

  protected async loadPieceHashes(info: BlobInfo): Promise<PublishedPieceHashes | undefined> {
    let handle: FileHandle;
    try {
      handle = await open(this.layout.piecesPath(info.digest), "r");
    } catch {
      return undefined;
    }
    try {
      const { size } = await handle.stat();
      if (size > maxPieceHashFileBytes(info.size)) return undefined;
      const file = Buffer.allocUnsafe(size);
      await readExactlyInto(handle, file, 0);
      return decodePieceHashFile(file, info.size);
    } catch (error: unknown) {
      this.logger?.debug({ err: error, digest: info.digest }, "unreadable piece hashes; computing them again");
      return undefined;
    } finally {
      await handle.close();
    }
  }

  protected savePieceHashes(digest: Digest, hashes: PublishedPieceHashes): Promise<void> {
    // Under the blob's lock: never recorded beside a blob that is being removed.
    return this.locks.run(blobLockKey(digest), async () => {
      if (this.index.get(digest) === undefined) return;
      await writeFileAtomic(this.layout.piecesPath(digest), encodePieceHashFile(hashes), { tmpDir: this.layout.tmpDir, syncDir: false });
    });
  }

  protected override verification(entry: IndexedBlob): RangeVerification | undefined {
    if (entry.verified) return undefined;
    return {
      digest: entry.info.digest,
      size: entry.info.size,
      onVerified: () => {
        entry.verified = true;
      },
      onMismatch: () => {
        this.logger?.error({ digest: entry.info.digest }, "stored blob does not match its digest; deleting it");
        void this.dropEntry(entry, "corrupt");
      },
    };
  }

  protected override ensureVerified(entry: IndexedBlob, signal: AbortSignal | undefined): Promise<void> {
    let check = this.verifying.get(entry);
    if (check === undefined) {
      check = this.verifyNow(entry).finally(() => this.verifying.delete(entry));
      this.verifying.set(entry, check);
    }
    return signal === undefined ? check : raceAbort(check, signal);
  }

  private async verifyNow(entry: IndexedBlob): Promise<void> {
    const digest = entry.info.digest;
    let matches: boolean;
    try {
      matches = await fileMatchesDigest(this.layout.blobPath(digest), digest, new AbortController().signal);
    } catch (error: unknown) {
      throw ioError(`verifying blob ${digest}`, error);
    }
    if (matches) {
      entry.verified = true;
      return;
    }
    this.logger?.error({ digest }, "stored blob does not match its digest; deleting it");
    await this.dropEntry(entry, "corrupt");
    throw new StoreError("ERR_STORE_DIGEST_MISMATCH", `stored content of ${digest} does not match its digest`);
  }

  protected override onUse(entry: IndexedBlob): void {
    if (entry.lastUsedMs - entry.persistedUseMs < LRU_PERSIST_INTERVAL_MS) return;
    entry.persistedUseMs = entry.lastUsedMs;
    const seconds = entry.lastUsedMs / 1000;
    utimes(this.layout.blobPath(entry.info.digest), seconds, seconds).catch((error: unknown) => {
      this.logger?.debug({ err: error, digest: entry.info.digest }, "could not record blob use time");
    });
  }

  protected override async shutdown(): Promise<void> {
    await this.verifier.stop();
  }

  private async verifyInBackground(entry: IndexedBlob, signal: AbortSignal): Promise<void> {
    const digest = entry.info.digest;
    let matches: boolean;
    try {
      matches = await fileMatchesDigest(this.layout.blobPath(digest), digest, signal);
    } catch (error: unknown) {
      if (signal.aborted) return;
      if (errnoCode(error) === "ENOENT") {
        await this.dropEntry(entry, "corrupt");
        return;
      }
      this.verifyFailed.add(entry);
      this.logger?.warn({ err: error, digest }, "could not verify stored blob");
      return;
    }
    if (this.index.get(digest) !== entry) return;
    if (matches) {
      entry.verified = true;
      return;
    }
    this.logger?.error({ digest }, "stored blob does not match its digest; deleting it");
    await this.dropEntry(entry, "corrupt");
  }
}
