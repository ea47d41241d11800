import type { Readable } from "node:stream";
import type { Logger } from "pino";
import type { Digest } from "../oci/index.js";
import { BlobIndex, type IndexedBlob, type QuotaOptions, StoreEvents } from "./blob-index.js";
import { choosePieceSize, packPieceHashes, pieceCount, unpackPieceHashes } from "../piece/index.js";
import type {
  BlobInfo,
  BlobReader,
  BlobStore,
  PartialBlob,
  PartialInfo,
  PieceHashList,
  ReadOptions,
  StoreEvent,
  StoreUsage,
  OpenPartialOptions,
} from "./blob-store.js";
import { StoreError } from "./errors.js";
import type { PartialBackend, PartialSnapshot, PublishedPieceHashes } from "./partial-backend.js";
import { CorePartialBlob } from "./partial-core.js";
import { hashPieces } from "./piece-hashing.js";
import { type RangeSource, RangeReadable, type RangeVerification } from "./range-readable.js";
import { abortedBySignal, attempt, checkDigest, checkPartialParams, raceAbort, resolveRange } from "./store-helpers.js";

export interface BlobStoreBaseOptions extends QuotaOptions {
  readonly logger?: Logger | undefined;
  /** Clock for LRU timestamps, in milliseconds. */
  readonly now?: (() => number) | undefined;
  /** Minimum interval between two saves of a partial's state (persistent stores). */
  readonly stateSaveIntervalMs?: number | undefined;
  /** Partials of at least this many bytes hash in the hash worker thread (default HASH_WORKER_MIN_BYTES). */
  readonly hashWorkerMinBytes?: number | undefined;
  /** Every partial of that size hashes in the worker, not only those opened `sequential` (tests of the worker path). */
  readonly hashAllInWorker?: boolean | undefined;
}

/**
 * Below this size a partial hashes on the event loop: a message to the worker and back costs more than
 * hashing a few megabytes, and most manifests and config blobs are tiny.
 */
export const HASH_WORKER_MIN_BYTES = 4 * 1024 * 1024;

/** A partial that is not open in this process but can be resumed (kept on abort/close, or found at start-up). */
export interface KeptPartial {
  readonly digest: Digest;
  readonly size: number;
  readonly pieceSize: number;
  readonly mediaType: string | undefined;
  readonly bitmap: Uint8Array;
  readonly appendOffset: number;
}

/**
 * Everything the disk and memory stores share: validation, the open-partial registry, quota reservation
 * and eviction, events, delete and close. Subclasses provide storage: partial backends, blob sources and
 * removal. Behaviour is identical by construction; the conformance suite checks it.
 */
export abstract class BlobStoreBase<K extends KeptPartial, B extends PartialBackend> implements BlobStore {
  protected readonly index: BlobIndex;
  protected readonly events: StoreEvents;
  protected readonly logger: Logger | undefined;
  protected readonly now: () => number;
  protected readonly kept = new Map<Digest, K>();
  private readonly stateSaveIntervalMs: number | undefined;
  private readonly hashWorkerMinBytes: number;
  private readonly hashAllInWorker: boolean;
  private readonly partials = new Map<Digest, CorePartialBlob>();
  private readonly opening = new Map<Digest, Promise<CorePartialBlob>>();
  /** Piece hashes being computed for blobs stored without them, shared by concurrent askers. */
  private readonly hashing = new Map<Digest, Promise<PieceHashList | undefined>>();
  private closing: Promise<void> | undefined;

  protected constructor(options: BlobStoreBaseOptions) {
    this.logger = options.logger;
    this.now = options.now ?? Date.now;
    this.index = new BlobIndex(options, this.now);
    this.events = new StoreEvents(options.logger);
    this.stateSaveIntervalMs = options.stateSaveIntervalMs;
    this.hashWorkerMinBytes = options.hashWorkerMinBytes ?? HASH_WORKER_MIN_BYTES;
    this.hashAllInWorker = options.hashAllInWorker === true;
  }

  /** Storage for a new partial, or for resuming `kept` (which may fail over to a fresh one: then no `resume`). */
  protected abstract createBackend(
    digest: Digest,
    size: number,
    pieceSize: number,
    mediaType: string | undefined,
    kept: K | undefined,
  ): Promise<{ backend: B; resume?: PartialSnapshot | undefined }>;
  /** The record to keep for a partial aborted with keepData. */
  protected abstract keptPartial(partial: KeptPartial, backend: B): K;
  protected abstract discardKept(partial: K): Promise<void>;
  /** Deletes a complete blob's data. Must take any per-digest lock synchronously. */
  protected abstract removeBlobData(digest: Digest): Promise<void>;
  protected abstract openBlob(entry: IndexedBlob): Promise<RangeSource>;
  /** The piece hashes recorded for a complete blob, or undefined when none are (or they are unreadable). */
  protected abstract loadPieceHashes(info: BlobInfo): Promise<PublishedPieceHashes | undefined>;
  /** Records piece hashes computed for a complete blob that had none. */
  protected abstract savePieceHashes(digest: Digest, hashes: PublishedPieceHashes): Promise<void>;
  /** Set for blobs whose content has not been hashed since they were found (disk, after a restart). */
  protected verification(_entry: IndexedBlob): RangeVerification | undefined {
    return undefined;
  }
  /**
   * Makes sure an unverified blob matches its digest before a range of it is served (one shared check
   * per blob). Whole-blob reads verify while streaming instead, so they need not wait.
   */
  protected ensureVerified(_entry: IndexedBlob, _signal: AbortSignal | undefined): Promise<void> {
    return Promise.resolve();
  }
  /** A read stream was opened (LRU use). */
  protected onUse(_entry: IndexedBlob): void {
    // Nothing by default.
  }
  protected shutdown(): Promise<void> {
    return Promise.resolve();
  }

  stat(digest: Digest): Promise<BlobInfo | undefined> {
    return attempt(() => {
      this.checkOpen();
      return this.index.get(checkDigest(digest))?.info;
    });
  }

  async createReadStream(digest: Digest, options?: ReadOptions): Promise<Readable> {
    this.checkOpen();
    const entry = this.index.get(checkDigest(digest));
    if (entry === undefined) throw new StoreError("ERR_STORE_BLOB_NOT_FOUND", `blob ${digest} not found`);
    const range = resolveRange(entry.info.size, options);
    if (options?.signal?.aborted === true) throw abortedBySignal(options.signal);
    const wholeBlob = range.start === 0 && range.end === entry.info.size - 1;
    // Hashing the whole blob for each range (e.g. every piece a peer asks for) would cost a full read per request.
    if (!wholeBlob && this.verification(entry) !== undefined) await this.ensureVerified(entry, options?.signal);
    this.index.touch(entry);
    this.onUse(entry);
    const unpin = this.index.pin(entry);
    let source: RangeSource;
    try {
      source = await this.openBlob(entry);
    } catch (error: unknown) {
      unpin();
      throw error;
    }
    return new RangeReadable(source, range, { signal: options?.signal, verify: this.verification(entry), onClose: unpin });
  }

  async openReader(digest: Digest, signal?: AbortSignal): Promise<BlobReader> {
    this.checkOpen();
    const entry = this.index.get(checkDigest(digest));
    if (entry === undefined) throw new StoreError("ERR_STORE_BLOB_NOT_FOUND", `blob ${digest} not found`);
    signal?.throwIfAborted();
    if (this.verification(entry) !== undefined) await this.ensureVerified(entry, signal);
    this.index.touch(entry);
    this.onUse(entry);
    const unpin = this.index.pin(entry);
    let source: RangeSource;
    try {
      source = await this.openBlob(entry);
    } catch (error: unknown) {
      unpin();
      throw error;
    }
    const size = entry.info.size;
    let closed: Promise<void> | undefined;
    return {
      size,
      read: (target, position) => {
        if (closed !== undefined) return Promise.reject(new StoreError("ERR_STORE_INVALID_ARGUMENT", `reader of ${digest} is closed`));
        if (!Number.isSafeInteger(position) || position < 0 || position + target.byteLength > size) {
          return Promise.reject(
            new StoreError(
              "ERR_STORE_INVALID_ARGUMENT",
              `bytes ${position}..${position + target.byteLength - 1} are outside ${digest} (${size} bytes)`,
            ),
          );
        }
        return source.readInto(target, position);
      },
      close: () => {
        closed ??= (async () => {
          unpin();
          await source.close();
        })();
        return closed;
      },
    };
  }

  async pieceHashes(digest: Digest, signal?: AbortSignal): Promise<PieceHashList | undefined> {
    this.checkOpen();
    const entry = this.index.get(checkDigest(digest));
    if (entry === undefined) return undefined;
    const pieceSize = choosePieceSize(entry.info.size);
    const count = pieceCount(entry.info.size, pieceSize);
    const recorded = await this.loadPieceHashes(entry.info);
    const hashes = recorded?.pieceSize === pieceSize ? unpackPieceHashes(recorded.packed, count) : undefined;
    if (hashes !== undefined) return { pieceSize, hashes };
    let computing = this.hashing.get(digest);
    if (computing === undefined) {
      computing = this.computePieceHashes(digest, pieceSize).finally(() => this.hashing.delete(digest));
      this.hashing.set(digest, computing);
    }
    return signal === undefined ? computing : raceAbort(computing, signal);
  }

  /** Hashes a stored blob's pieces (it has none recorded) and records them; undefined if it went away. */
  private async computePieceHashes(digest: Digest, pieceSize: number): Promise<PieceHashList | undefined> {
    let reader: BlobReader;
    try {
      reader = await this.openReader(digest);
    } catch (error: unknown) {
      if (error instanceof StoreError && error.code === "ERR_STORE_BLOB_NOT_FOUND") return undefined;
      throw error;
    }
    let hashes: PieceHashList;
    try {
      hashes = await hashPieces(reader, pieceSize);
    } finally {
      await reader.close();
    }
    try {
      await this.savePieceHashes(digest, { pieceSize, packed: packPieceHashes(hashes.hashes) });
    } catch (error: unknown) {
      this.logger?.warn({ err: error, digest }, "could not record piece hashes; they will be computed again");
    }
    return hashes;
  }

  async openPartial(digest: Digest, size: number, options: OpenPartialOptions): Promise<PartialBlob> {
    this.checkOpen();
    checkDigest(digest);
    checkPartialParams(size, options.pieceSize, options.mediaType);
    for (;;) {
      this.checkOpen();
      const existing = this.partials.get(digest);
      if (existing !== undefined) {
        if (existing.state !== "open") {
          // Aborted and still settling (or committing): wait for it to leave, then decide again.
          await existing.whenSettled();
          continue;
        }
        if (existing.size !== size || existing.pieceSize !== options.pieceSize) {
          throw new StoreError(
            "ERR_STORE_CONFLICT",
            `partial ${digest} is open with size ${existing.size} and piece size ${existing.pieceSize}, not ${size} and ${options.pieceSize}`,
          );
        }
        return existing;
      }
      const pending = this.opening.get(digest);
      if (pending !== undefined) {
        // Another caller is creating it; its failure is its own (we retry), its success is our handle.
        await pending.catch(() => undefined);
        continue;
      }
      if (this.index.get(digest) !== undefined) throw new StoreError("ERR_STORE_BLOB_EXISTS", `blob ${digest} is already complete`);
      const creation = this.createPartial(digest, size, options.pieceSize, options.mediaType, options.sequential === true);
      this.opening.set(digest, creation);
      try {
        return await creation;
      } finally {
        this.opening.delete(digest);
      }
    }
  }

  getPartial(digest: Digest): PartialBlob | undefined {
    const partial = this.partials.get(digest);
    return partial?.state === "open" ? partial : undefined;
  }

  list(): Promise<BlobInfo[]> {
    return attempt(() => {
      this.checkOpen();
      return this.index.entries().map((entry) => entry.info);
    });
  }

  listPartials(): Promise<PartialInfo[]> {
    return attempt(() => {
      this.checkOpen();
      const open = [...this.partials.values()]
        .filter((partial) => partial.state === "open")
        .map((partial) => ({ digest: partial.digest, size: partial.size, pieceSize: partial.pieceSize, bitmap: partial.bitmap() }));
      const kept = [...this.kept.values()].map((partial) => ({
        digest: partial.digest,
        size: partial.size,
        pieceSize: partial.pieceSize,
        bitmap: partial.bitmap.slice(),
      }));
      return [...open, ...kept];
    });
  }

  async delete(digest: Digest): Promise<boolean> {
    this.checkOpen();
    checkDigest(digest);
    await this.opening.get(digest)?.catch(() => undefined);
    let existed = false;
    const partial = this.partials.get(digest);
    if (partial !== undefined) {
      existed = true;
      await partial.abort(new StoreError("ERR_STORE_ABORTED", `blob ${digest} was deleted`));
    }
    const kept = this.kept.get(digest);
    if (kept !== undefined) {
      existed = true;
      this.kept.delete(digest);
      await this.discardKept(kept);
    }
    const entry = this.index.remove(digest);
    if (entry !== undefined) {
      existed = true;
      await this.dropBlobs([entry], "deleted");
    }
    return existed;
  }

  usage(): StoreUsage {
    return {
      usedBytes: this.index.usedBytes,
      quotaBytes: this.index.quotaBytes,
      blobs: this.index.count,
      partials: [...this.partials.values()].filter((partial) => partial.state === "open").length,
    };
  }

  subscribe(listener: (event: StoreEvent) => void): () => void {
    return this.events.subscribe(listener);
  }

  /** Idempotent. Open partials are aborted with ERR_STORE_CLOSED and keep their data for a resume. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.allSettled([...this.opening.values()]);
      const reason = new StoreError("ERR_STORE_CLOSED", "blob store closed");
      await Promise.all([...this.partials.values()].map((partial) => partial.abort(reason, { keepData: true })));
      await this.shutdown();
    })();
    return this.closing;
  }

  protected checkOpen(): void {
    if (this.closing !== undefined) throw new StoreError("ERR_STORE_CLOSED", "blob store closed");
  }

  protected get isClosed(): boolean {
    return this.closing !== undefined;
  }

  /** Removes blobs already taken out of the index, then announces them. Failures are logged: the index is the truth. */
  protected async dropBlobs(entries: readonly IndexedBlob[], reason: "evicted" | "deleted" | "corrupt"): Promise<void> {
    await Promise.all(
      entries.map(async (entry) => {
        const digest = entry.info.digest;
        try {
          await this.removeBlobData(digest);
        } catch (error: unknown) {
          this.logger?.warn({ err: error, digest }, "removing blob data failed");
        }
        if (reason !== "deleted") this.logger?.info({ digest, size: entry.info.size, reason }, "blob removed");
        this.events.emit({ type: "removed", digest, reason });
      }),
    );
  }

  /** Removes exactly this entry if it is still the indexed one (used for corrupt blobs). */
  protected async dropEntry(entry: IndexedBlob, reason: "evicted" | "deleted" | "corrupt"): Promise<void> {
    if (this.index.removeEntry(entry)) await this.dropBlobs([entry], reason);
  }

  private async createPartial(
    digest: Digest,
    size: number,
    pieceSize: number,
    mediaType: string | undefined,
    sequential: boolean,
  ): Promise<CorePartialBlob> {
    const evicted = this.index.reserve(size);
    try {
      await this.dropBlobs(evicted, "evicted");
      let kept = this.kept.get(digest);
      if (kept !== undefined && (kept.size !== size || kept.pieceSize !== pieceSize)) {
        this.kept.delete(digest);
        await this.discardKept(kept);
        kept = undefined;
      }
      const resolvedMediaType = mediaType ?? kept?.mediaType;
      const { backend, resume } = await this.createBackend(digest, size, pieceSize, resolvedMediaType, kept);
      this.kept.delete(digest);
      const partial: CorePartialBlob = new CorePartialBlob({
        digest,
        size,
        pieceSize,
        mediaType: resolvedMediaType,
        backend,
        resume,
        stateSaveIntervalMs: this.stateSaveIntervalMs,
        hashInWorker: (sequential || this.hashAllInWorker) && size >= this.hashWorkerMinBytes,
        logger: this.logger,
        hooks: {
          committed: async (info) => {
            if (this.partials.get(digest) === partial) this.partials.delete(digest);
            const { evicted: pushedOut } = this.index.commitReservation(size, info);
            this.events.emit({ type: "added", blob: info });
            await this.dropBlobs(pushedOut, "evicted");
          },
          aborted: (snapshot) => {
            if (this.partials.get(digest) === partial) this.partials.delete(digest);
            this.index.release(size);
            if (snapshot !== undefined) {
              const record = { digest, size, pieceSize, mediaType: resolvedMediaType, ...snapshot };
              this.kept.set(digest, this.keptPartial(record, backend));
            }
          },
        },
      });
      this.partials.set(digest, partial);
      return partial;
    } catch (error: unknown) {
      this.index.release(size);
      throw error;
    }
  }
}
