import type { Readable } from "node:stream";
import type { Logger } from "pino";
import type { Digest } from "../oci/index.js";
import { choosePieceSize, pieceCount } from "../piece/index.js";
import { TokenBucket } from "../throttle/index.js";
import { StoreEvents } from "./blob-index.js";
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
import { isStoreError, StoreError } from "./errors.js";
import type { ExternalPieceHashes } from "./external-piece-hashes.js";
import type { ExternalBlob, ExternalBlobSource, ExternalSourceEvent } from "./external-source.js";
import { hashPieces } from "./piece-hashing.js";
import { RangeReadable } from "./range-readable.js";
import { checkDigest, raceAbort, resolveRange } from "./store-helpers.js";

export interface CompositeBlobStoreOptions {
  /** The agent's own store: partials, blobs the external source lacks, manifests. */
  readonly own: BlobStore;
  /** Blobs the node holds already (containerd's content store). Closed with this store. */
  readonly external: ExternalBlobSource;
  /** Where the piece hashes of external blobs are kept. */
  readonly pieceHashes: ExternalPieceHashes;
  /**
   * Bytes per second of external blobs hashed in the background (blobs the node got without the agent),
   * so that announcing them costs a bounded share of a core; 0 = unlimited. A blob someone asks the hashes
   * of (a peer's Stat) is hashed at full speed.
   */
  readonly hashBytesPerSecond?: number | undefined;
  readonly logger?: Logger | undefined;
  /** Bytes read from the external source for the mirror or peers (the served-from-containerd metric). */
  readonly onExternalBytes?: ((bytes: number) => void) | undefined;
  /** The agent dropped its own copy of a blob because the external source holds it. */
  readonly onOwnCopyDropped?: ((blob: BlobInfo) => void) | undefined;
}

/** What the external source holds, for the gauges. */
export interface ExternalUsage {
  readonly blobs: number;
  readonly bytes: number;
  /** Of those, announced (piece hashes at hand) and not also in the agent's store. */
  readonly advertisedBlobs: number;
  /** Waiting for their piece hashes to be computed. */
  readonly hashingBlobs: number;
}

/**
 * One store over the agent's own store and the node's runtime content (an ExternalBlobSource), so the node
 * keeps one copy of each blob: reads (stat, openReader, createReadStream, pieceHashes) are answered from the
 * agent's store first, then the external source; writes (partials) go to the agent's store. Once the
 * external source holds a blob the agent stored (the runtime committed what it pulled through the mirror),
 * the agent's copy is dropped and its piece hashes handed over; manifests (blobs with a media type, a few
 * KiB) stay, because the mirror needs their media type and the runtime's store does not record it.
 *
 * `list` and `subscribe` give what may be announced: the agent's blobs, and external blobs once their piece
 * hashes are at hand (handed over, remembered from an earlier run, or computed in the background within
 * `hashBytesPerSecond`). `stat` and reads cover every external blob at once. `usage` (the quota, the store
 * metrics) counts only the agent's own store.
 */
export class CompositeBlobStore implements BlobStore {
  private readonly own: BlobStore;
  private readonly external: ExternalBlobSource;
  private readonly events: StoreEvents;
  private readonly ownDigests = new Set<Digest>();
  /** External blobs with piece hashes at hand: announced unless the agent's store has them too. */
  private readonly advertised = new Map<Digest, ExternalBlob>();
  /** External blobs waiting for the background hasher, oldest first. */
  private readonly pending = new Map<Digest, ExternalBlob>();
  private readonly hashing = new Map<Digest, Promise<PieceHashList | undefined>>();
  /** Blobs someone asked the hashes of: hashed without the budget. */
  private readonly urgent = new Set<Digest>();
  private readonly bucket: TokenBucket | undefined;
  private readonly closer = new AbortController();
  private readonly unsubscribers: (() => void)[] = [];
  /** External events are handled one at a time, in order. */
  private work: Promise<void> = Promise.resolve();
  private worker: Promise<void> | undefined;
  private closing: Promise<void> | undefined;

  private constructor(private readonly options: CompositeBlobStoreOptions) {
    this.own = options.own;
    this.external = options.external;
    this.events = new StoreEvents(options.logger);
    const rate = options.hashBytesPerSecond ?? 0;
    this.bucket = rate > 0 ? new TokenBucket(rate) : undefined;
  }

  /** Subscribes to both sides first, then takes in what they hold, so nothing falls between. */
  static async open(options: CompositeBlobStoreOptions): Promise<CompositeBlobStore> {
    const store = new CompositeBlobStore(options);
    store.unsubscribers.push(
      options.own.subscribe((event) => {
        store.onOwnEvent(event);
      }),
    );
    for (const blob of await options.own.list()) store.ownDigests.add(blob.digest);
    store.unsubscribers.push(
      options.external.subscribe((event) => {
        store.onExternalEvent(event);
      }),
    );
    const held = options.external.list();
    if (held.length > 0) store.onExternalEvent({ type: "added", blobs: held });
    return store;
  }

  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    const own = await this.own.stat(digest);
    if (own !== undefined) return own;
    const external = this.external.get(digest);
    return external === undefined ? undefined : { digest: external.digest, size: external.size };
  }

  async createReadStream(digest: Digest, options?: ReadOptions): Promise<Readable> {
    try {
      return await this.own.createReadStream(digest, options);
    } catch (error: unknown) {
      if (!isStoreError(error, "ERR_STORE_BLOB_NOT_FOUND") || this.external.get(digest) === undefined) throw error;
    }
    const blob = this.external.get(digest);
    if (blob === undefined) throw notFound(digest);
    const range = resolveRange(blob.size, options);
    const reader = await this.openExternal(digest, options?.signal);
    return new RangeReadable({ readInto: (target, position) => reader.read(target, position), close: () => reader.close() }, range, {
      signal: options?.signal,
    });
  }

  async openReader(digest: Digest, signal?: AbortSignal): Promise<BlobReader> {
    try {
      return await this.own.openReader(digest, signal);
    } catch (error: unknown) {
      if (!isStoreError(error, "ERR_STORE_BLOB_NOT_FOUND") || this.external.get(digest) === undefined) throw error;
    }
    return this.openExternal(digest, signal);
  }

  async pieceHashes(digest: Digest, signal?: AbortSignal): Promise<PieceHashList | undefined> {
    const own = await this.own.pieceHashes(digest, signal);
    if (own !== undefined) return own;
    const blob = this.external.get(digest);
    if (blob === undefined) return undefined;
    const recorded = await this.options.pieceHashes.get(blob);
    if (recorded !== undefined) return recorded;
    this.urgent.add(digest);
    this.pending.delete(digest);
    const computing = this.computeHashes(blob);
    return signal === undefined ? computing : raceAbort(computing, signal);
  }

  async openPartial(digest: Digest, size: number, options: OpenPartialOptions): Promise<PartialBlob> {
    if (!this.isClosed && this.external.get(checkDigest(digest)) !== undefined) {
      throw new StoreError("ERR_STORE_BLOB_EXISTS", `blob ${digest} is held by ${this.external.name}`);
    }
    return this.own.openPartial(digest, size, options);
  }

  getPartial(digest: Digest): PartialBlob | undefined {
    return this.own.getPartial(digest);
  }

  async list(): Promise<BlobInfo[]> {
    const own = await this.own.list();
    const external = [...this.advertised.values()]
      .filter((blob) => !this.ownDigests.has(blob.digest))
      .map((blob) => ({ digest: blob.digest, size: blob.size }));
    return [...own, ...external];
  }

  listPartials(): Promise<PartialInfo[]> {
    return this.own.listPartials();
  }

  /** Deletes the agent's own copy only: the external source is read-only. */
  delete(digest: Digest): Promise<boolean> {
    return this.own.delete(digest);
  }

  usage(): StoreUsage {
    return this.own.usage();
  }

  externalUsage(): ExternalUsage {
    const held = this.external.list();
    return {
      blobs: held.length,
      bytes: held.reduce((sum, blob) => sum + blob.size, 0),
      advertisedBlobs: [...this.advertised.keys()].filter((digest) => !this.ownDigests.has(digest)).length,
      hashingBlobs: this.pending.size + this.hashing.size,
    };
  }

  subscribe(listener: (event: StoreEvent) => void): () => void {
    return this.events.subscribe(listener);
  }

  /** Resolves once the external events seen so far are handled and the background hasher is idle (tests). */
  async idle(): Promise<void> {
    for (;;) {
      const work = this.work;
      const worker = this.worker;
      await work;
      await worker;
      if (work === this.work && worker === this.worker) return;
    }
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closer.abort(new StoreError("ERR_STORE_CLOSED", "blob store closed"));
      for (const unsubscribe of this.unsubscribers) unsubscribe();
      await Promise.allSettled([this.work, this.worker, ...this.hashing.values()]);
      await this.external.close().catch((error: unknown) => {
        this.options.logger?.warn({ err: error, source: this.external.name }, "closing the external source failed");
      });
      await this.own.close();
    })();
    return this.closing;
  }

  private get isClosed(): boolean {
    return this.closing !== undefined;
  }

  private async openExternal(digest: Digest, signal: AbortSignal | undefined): Promise<BlobReader> {
    const reader = await this.external.openReader(digest, signal);
    const count = this.options.onExternalBytes;
    if (count === undefined) return reader;
    return {
      size: reader.size,
      read: async (target, position) => {
        await reader.read(target, position);
        count(target.byteLength);
      },
      close: () => reader.close(),
    };
  }

  private onOwnEvent(event: StoreEvent): void {
    const digest = event.type === "added" ? event.blob.digest : event.digest;
    if (event.type === "added") this.ownDigests.add(digest);
    else this.ownDigests.delete(digest);
    // A blob announced through the external source is announced already (and stays so when the agent's copy goes).
    if (!this.advertised.has(digest)) this.events.emit(event);
    const external = event.type === "added" ? this.external.get(digest) : undefined;
    if (external !== undefined) this.enqueue(() => this.adopt(external));
  }

  private onExternalEvent(event: ExternalSourceEvent): void {
    if (event.type === "added") {
      for (const blob of event.blobs) this.enqueue(() => this.adopt(blob));
      return;
    }
    for (const digest of event.digests) this.enqueue(() => this.withdraw(digest));
  }

  private enqueue(step: () => Promise<void>): void {
    this.work = this.work.then(step).catch((error: unknown) => {
      if (!this.closer.signal.aborted)
        this.options.logger?.warn({ err: error, source: this.external.name }, "handling a change of the external source failed");
    });
  }

  /** The external source holds `blob`: announce it once its piece hashes are at hand, and drop the agent's copy. */
  private async adopt(blob: ExternalBlob): Promise<void> {
    if (this.closer.signal.aborted || this.external.get(blob.digest) === undefined) return;
    if (!this.advertised.has(blob.digest)) {
      let hashes = await this.options.pieceHashes.get(blob);
      if (hashes === undefined && this.ownDigests.has(blob.digest)) {
        // What the agent stored comes with its piece hashes: hand them over instead of hashing again.
        hashes = await this.own.pieceHashes(blob.digest, this.closer.signal).catch(() => undefined);
        const pieceSize = choosePieceSize(blob.size);
        if (hashes?.pieceSize === pieceSize && hashes.hashes.length === pieceCount(blob.size, pieceSize))
          await this.options.pieceHashes.put(blob, hashes);
        else hashes = undefined;
      }
      if (hashes === undefined) {
        this.pending.set(blob.digest, blob);
        this.startWorker();
        return;
      }
      this.advertise(blob);
    }
    await this.dropOwnCopy(blob);
  }

  private advertise(blob: ExternalBlob): void {
    if (this.external.get(blob.digest) === undefined || this.advertised.has(blob.digest)) return;
    this.advertised.set(blob.digest, blob);
    if (!this.ownDigests.has(blob.digest)) this.events.emit({ type: "added", blob: { digest: blob.digest, size: blob.size } });
  }

  private async withdraw(digest: Digest): Promise<void> {
    this.pending.delete(digest);
    if (this.advertised.delete(digest) && !this.ownDigests.has(digest)) this.events.emit({ type: "removed", digest, reason: "deleted" });
    await this.options.pieceHashes.forget(digest);
  }

  /** Removes the agent's copy of a blob the external source holds, except manifests (see the class comment). */
  private async dropOwnCopy(blob: ExternalBlob): Promise<void> {
    if (!this.ownDigests.has(blob.digest) || !this.advertised.has(blob.digest)) return;
    const info = await this.own.stat(blob.digest);
    if (info === undefined || info.mediaType !== undefined || info.size !== blob.size) return;
    if (await this.own.delete(blob.digest)) {
      this.options.logger?.debug(
        { digest: blob.digest, size: blob.size, source: this.external.name },
        "own copy dropped: the runtime holds the blob",
      );
      this.options.onOwnCopyDropped?.(info);
    }
  }

  private startWorker(): void {
    this.worker ??= this.hashPending().finally(() => {
      this.worker = undefined;
      if (this.pending.size > 0 && !this.closer.signal.aborted) this.startWorker();
    });
  }

  /** The background hasher: one blob at a time, within the budget. */
  private async hashPending(): Promise<void> {
    for (const [digest, blob] of this.pending) {
      if (this.closer.signal.aborted) return;
      this.pending.delete(digest);
      if (this.advertised.has(digest)) continue;
      try {
        await this.computeHashes(blob);
      } catch (error: unknown) {
        if (!this.isClosed)
          this.options.logger?.warn(
            { err: error, digest, source: this.external.name },
            "hashing an external blob failed; it is not announced",
          );
      }
    }
  }

  /** Hashes an external blob's pieces (shared by concurrent askers), records and announces them. */
  private computeHashes(blob: ExternalBlob): Promise<PieceHashList | undefined> {
    const running = this.hashing.get(blob.digest);
    if (running !== undefined) return running;
    const { digest } = blob;
    const computing = (async (): Promise<PieceHashList | undefined> => {
      let reader: BlobReader;
      try {
        reader = await this.external.openReader(digest, this.closer.signal);
      } catch (error: unknown) {
        if (isStoreError(error, "ERR_STORE_BLOB_NOT_FOUND")) return undefined;
        throw error;
      }
      let hashes: PieceHashList;
      try {
        hashes = await hashPieces(reader, choosePieceSize(blob.size), {
          signal: this.closer.signal,
          pace: (bytes, signal) =>
            this.bucket === undefined || this.urgent.has(digest) ? Promise.resolve() : this.bucket.take(bytes, signal),
        });
      } finally {
        await reader.close();
      }
      await this.options.pieceHashes.put(blob, hashes);
      if (this.external.get(digest) === undefined) await this.options.pieceHashes.forget(digest);
      else this.advertise(blob);
      return hashes;
    })().finally(() => {
      this.hashing.delete(digest);
      this.urgent.delete(digest);
    });
    this.hashing.set(digest, computing);
    return computing;
  }
}

function notFound(digest: Digest): StoreError {
  return new StoreError("ERR_STORE_BLOB_NOT_FOUND", `blob ${digest} not found`);
}
