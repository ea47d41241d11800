import type { Logger } from "pino";
import type { SessionRequest } from "../gen/tracker/v1/tracker.js";
import type { Digest } from "../oci/index.js";
import { PublishedTags } from "./published-tags.js";
import { ReannouncePacing, type ReannouncePacingOptions, Reannouncer } from "./reannounce-pacing.js";
import type { BlobAnnouncement, TagRecord } from "./tracker.js";
import { announceRequests, tagSeenRequest, withdrawRequest } from "./wire.js";

/** What the inventory is written to: a registered session's stream (grpc-js ClientDuplexStream). */
export interface InventoryStream {
  /** False once the stream's buffer is full (the message is still queued). */
  write(request: SessionRequest): boolean;
  once(event: "drain", listener: () => void): unknown;
}

export interface InventorySyncOptions {
  readonly logger: Logger;
  /** How the inventory is re-announced on a new session (reannounce-pacing.ts). */
  readonly reannounce?: ReannouncePacingOptions;
  /** The stream of the registered session; undefined while there is none. */
  readonly stream: () => InventoryStream | undefined;
}

/**
 * The agent's side of what the tracker knows of it: the inventory (the latest announcement per digest) and
 * the tags it resolved upstream, kept across sessions. A new session always starts empty on the tracker,
 * so each one is sent all of it again, paced (Reannouncer); new announces and withdrawals go at once.
 * Writes pause while the stream's buffer is full and go on at 'drain'.
 */
export class InventorySync {
  private readonly inventory = new Map<Digest, BlobAnnouncement>();
  /** Digests whose current inventory entry (or absence: a withdraw) still has to be sent. */
  private readonly dirty = new Set<Digest>();
  /** Tags this agent resolved upstream, sent after every (re)connect like the inventory. */
  private readonly tags = new PublishedTags();
  /** What of the inventory the current session has not been sent yet. */
  private readonly reannouncer: Reannouncer<Digest>;
  private awaitingDrain = false;

  constructor(private readonly options: InventorySyncOptions) {
    this.reannouncer = new Reannouncer<Digest>({
      pacing: new ReannouncePacing(options.reannounce),
      ready: () => !this.awaitingDrain,
      send: (batch) => {
        // Entries announced or withdrawn meanwhile were taken out of the queue (and are dirty already).
        for (const digest of batch) if (this.inventory.has(digest)) this.dirty.add(digest);
        this.flush();
        if (this.reannouncer.pending === 0) this.options.logger.info({ blobs: this.inventory.size }, "inventory re-announced");
      },
    });
  }

  /** Blobs in the inventory. */
  get size(): number {
    return this.inventory.size;
  }

  /** The stream's buffer is full: nothing more is written until it drains. */
  get paused(): boolean {
    return this.awaitingDrain;
  }

  /** `entry` (validated, as inventoryEntry keeps it) replaces the digest's entry and is sent at once. */
  announce(entry: BlobAnnouncement): void {
    this.inventory.set(entry.digest, entry);
    this.reannouncer.forget(entry.digest);
    this.dirty.add(entry.digest);
    this.flush();
  }

  withdraw(digest: Digest): void {
    this.inventory.delete(digest);
    this.reannouncer.forget(digest);
    this.dirty.add(digest);
    this.flush();
  }

  /** `record` (validated) is kept and sent at once. */
  publishTag(record: TagRecord): void {
    this.tags.add(record);
    this.flush();
  }

  /**
   * A session registered: the tracker knows nothing of this agent, so all of it goes again, the inventory
   * paced (`resumed` after a lost session, within the tracker's `spreadMs`). Its stream starts with an
   * empty buffer. Call flush() after.
   */
  restart(resumed: boolean, spreadMs: number): void {
    this.awaitingDrain = false;
    this.dirty.clear();
    this.reannouncer.start(this.inventory.keys(), resumed, spreadMs);
    this.tags.markAllUnsent();
  }

  /** The session ended: nothing more is sent; the next one starts over. */
  stop(): void {
    this.reannouncer.stop();
  }

  /** Sends pending announces and withdrawals in order, pausing while the stream's buffer is full. */
  flush(): void {
    const call = this.options.stream();
    if (call === undefined || this.awaitingDrain) return;
    const awaitDrain = (): void => {
      this.awaitingDrain = true;
      call.once("drain", () => {
        if (call !== this.options.stream()) return;
        this.awaitingDrain = false;
        this.flush();
      });
    };
    for (const digest of this.dirty) {
      this.dirty.delete(digest);
      const announcement = this.inventory.get(digest);
      const requests = announcement === undefined ? [withdrawRequest(digest)] : announceRequests(announcement);
      // Every message of one announcement goes out together (the stream buffers past its mark).
      let flowing = true;
      for (const request of requests) flowing = call.write(request);
      if (flowing) continue;
      awaitDrain();
      return;
    }
    for (const record of this.tags.takeUnsent()) {
      if (call.write(tagSeenRequest(record))) continue;
      awaitDrain();
      return;
    }
  }
}
