import type { Logger } from "pino";
import type { Digest } from "../oci/index.js";
import type { BlobInfo, BlobStore } from "../store/blob-store.js";
import { isStoreError } from "../store/errors.js";
import { choosePieceSize, pieceCount } from "../piece/index.js";
import type { Tracker } from "../tracker/tracker.js";
import { type PieceHashIndex, hashStoredPieces } from "./piece-hashes.js";

export interface InventoryOptions {
  readonly store: BlobStore;
  readonly tracker: Tracker;
  readonly hashIndex: PieceHashIndex;
  /** Hashes a fetcher is still computing for a blob it just completed. */
  readonly pendingHashes: (digest: Digest) => Promise<readonly Uint8Array[] | undefined> | undefined;
  readonly logger: Logger;
}

/**
 * Keeps the tracker's view of this agent's store: every complete blob announced with its piece hashes
 * (at start, and when one is added), every removed blob withdrawn. The tracker client re-sends the whole
 * inventory after each reconnect. Work is serialized so start-up hashing never competes with itself.
 */
export class InventorySync {
  private queue: Promise<void> = Promise.resolve();
  private unsubscribe: (() => void) | undefined;
  private readonly controller = new AbortController();

  constructor(private readonly options: InventoryOptions) {}

  /** Subscribes first, then announces what the store already holds, so nothing falls between. */
  async start(): Promise<void> {
    this.unsubscribe = this.options.store.subscribe((event) => {
      if (event.type === "added") this.enqueue(() => this.announce(event.blob));
      else this.enqueue(() => this.remove(event.digest));
    });
    for (const blob of await this.options.store.list()) this.enqueue(() => this.announce(blob));
  }

  /** Resolves when everything queued so far is done (tests, shutdown). */
  async idle(): Promise<void> {
    await this.queue;
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    this.controller.abort();
    await this.queue;
  }

  private enqueue(work: () => Promise<void>): void {
    this.queue = this.queue.then(work).catch((error: unknown) => {
      if (!this.controller.signal.aborted) this.options.logger.warn({ err: error }, "inventory update failed");
    });
  }

  private async announce(blob: BlobInfo): Promise<void> {
    const { hashIndex, tracker } = this.options;
    const pieceSize = choosePieceSize(blob.size);
    let hashes = (await this.options.pendingHashes(blob.digest)) ?? (await hashIndex.get(blob.digest));
    if (hashes?.length !== pieceCount(blob.size, pieceSize)) {
      hashes = await this.hashStored(blob, pieceSize);
      if (hashes === undefined) return;
      await hashIndex.put(blob.digest, hashes);
    }
    tracker.announce({
      digest: blob.digest,
      size: blob.size,
      pieceSize,
      complete: true,
      pieceHashes: hashes.map((sha256, index) => ({ index, sha256 })),
    });
  }

  /** Piece hashes of a stored blob that has none recorded (cached before, or a manifest). */
  private async hashStored(blob: BlobInfo, pieceSize: number): Promise<Uint8Array[] | undefined> {
    try {
      return await hashStoredPieces(this.options.store, blob, pieceSize, this.controller.signal);
    } catch (error) {
      // Evicted meanwhile: there is nothing to announce.
      if (isStoreError(error, "ERR_STORE_BLOB_NOT_FOUND")) return undefined;
      throw error;
    }
  }

  private async remove(digest: Digest): Promise<void> {
    this.options.tracker.withdraw(digest);
    await this.options.hashIndex.delete(digest);
  }
}
