import type { Logger } from "pino";
import type { Digest } from "../oci/index.js";
import type { BlobChange, BlobChangeListener } from "./tracker.js";

/**
 * The agent's side of BlobChanged notices: per digest, the downloads waiting for news of it (Tracker.watchBlob).
 * A notice for a digest nobody listens to any more (the download ended) is ignored.
 */
export class NoticeListeners {
  private readonly listeners = new Map<Digest, Set<BlobChangeListener>>();

  constructor(private readonly logger: Logger) {}

  /** Calls `listener` on every notice of `digest` until the returned function is called. */
  add(digest: Digest, listener: BlobChangeListener): () => void {
    let set = this.listeners.get(digest);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(digest, set);
    }
    // A wrapper per subscription: the same function subscribed twice is two subscriptions.
    const entry = (change: BlobChange | undefined): void => {
      listener(change);
    };
    set.add(entry);
    return () => {
      const current = this.listeners.get(digest);
      if (current?.delete(entry) === true && current.size === 0) this.listeners.delete(digest);
    };
  }

  /** Digests with at least one listener. */
  get size(): number {
    return this.listeners.size;
  }

  /** `change`: what the notice says changed; undefined: look the blob up. Every listener gets the same object (read only). */
  notify(digest: string, change: BlobChange | undefined): void {
    const set = this.listeners.get(digest as Digest);
    if (set === undefined) return;
    for (const listener of [...set]) {
      try {
        listener(change);
      } catch (error: unknown) {
        this.logger.error({ err: error, digest }, "blob notice listener failed");
      }
    }
  }
}
