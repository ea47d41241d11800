import type { Logger } from "pino";
import type { Digest } from "../oci/index.js";
import type { BlobInfo, BlobStore } from "../store/index.js";
import { isStoreError } from "../store/index.js";
import type { Tracker } from "../tracker/index.js";

export interface InventoryOptions {
  readonly store: BlobStore;
  readonly tracker: Tracker;
  readonly logger: Logger;
}

/**
 * Keeps the tracker's view of this agent's store: every complete blob announced with its piece hashes
 * (at start, and when one is added), every removed blob withdrawn. The hashes come from the store, which
 * records them as blobs are written (and computes them once for blobs stored without). The tracker client
 * re-sends the whole inventory after each reconnect. Work is serialized so start-up hashing of old blobs
 * never competes with itself.
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
    let hashes;
    try {
      hashes = await this.options.store.pieceHashes(blob.digest, this.controller.signal);
    } catch (error) {
      // Evicted meanwhile: there is nothing to announce.
      if (isStoreError(error, "ERR_STORE_BLOB_NOT_FOUND")) return;
      throw error;
    }
    if (hashes === undefined) return;
    this.options.tracker.announce({
      digest: blob.digest,
      size: blob.size,
      pieceSize: hashes.pieceSize,
      complete: true,
      pieceHashes: hashes.hashes.map((sha256, index) => ({ index, sha256 })),
    });
  }

  private remove(digest: Digest): Promise<void> {
    this.options.tracker.withdraw(digest);
    return Promise.resolve();
  }
}
