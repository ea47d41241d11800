import type { Logger } from "pino";
import type { Digest } from "../oci/index.js";
import { TrackerError, isTrackerError } from "./errors.js";
import type { Membership } from "./membership.js";
import type { MemoryTracker } from "./memory-tracker.js";
import type { TrackerSession } from "./tracker-session.js";
import { NoticeListeners } from "./notice-listeners.js";
import { PublishedTags } from "./published-tags.js";
import type {
  AgentIdentity,
  BlobAnnouncement,
  BlobChange,
  BlobChangeListener,
  LookupOptions,
  LookupResult,
  TagKey,
  TagRecord,
  Tracker,
} from "./tracker.js";
import { inventoryEntry, validateActiveUploads, validateAnnouncement, validateTagRecord } from "./validation.js";

/** Wait before registering again after the tracker ended the session itself. */
const DEFAULT_REREGISTER_DELAY_MS = 100;

export interface LocalTrackerOptions {
  readonly tracker: MemoryTracker;
  readonly identity: AgentIdentity;
  readonly logger: Logger;
  readonly membership?: Membership;
  readonly reregisterDelayMs?: number;
  readonly onConnectionChange?: (connected: boolean) => void;
  /** Take BlobChanged notices (true by default); false behaves as an agent from before notices. */
  readonly acceptNotices?: boolean;
}

/**
 * The agent-side Tracker in process, straight onto a MemoryTracker: swarm tests and single-process
 * demos. Same inventory semantics as GrpcTrackerClient: the latest announcement per digest is kept and
 * sent again whenever the session is re-established; a malformed announcement throws, one the tracker
 * refuses (a fifth disagreeing claim about a blob, or a blob the agent is excluded for) is logged.
 */
export class LocalTracker implements Tracker {
  private readonly inventory = new Map<Digest, BlobAnnouncement>();
  private readonly tags = new PublishedTags();
  private readonly logger: Logger;
  private session: TrackerSession | undefined;
  private activeUploads = 0;
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly notices: NoticeListeners;

  /** Registers at once; throws ERR_TRACKER_PERMISSION_DENIED when the membership refuses the agent. */
  constructor(private readonly options: LocalTrackerOptions) {
    this.logger = options.logger;
    this.notices = new NoticeListeners(options.logger);
    this.session = this.register();
  }

  get connected(): boolean {
    return this.session?.open === true;
  }

  get sendsNotices(): boolean {
    return this.connected && this.options.acceptNotices !== false;
  }

  watchBlob(digest: Digest, listener: BlobChangeListener): () => void {
    return this.notices.add(digest, listener);
  }

  lookup(digest: Digest, options: LookupOptions): Promise<LookupResult> {
    try {
      options.signal?.throwIfAborted();
      if (this.closed) throw new TrackerError("ERR_TRACKER_CLOSED", "tracker client is closed");
      if (!this.connected) throw new TrackerError("ERR_TRACKER_UNAVAILABLE", "no session with the in-process tracker");
      return Promise.resolve(
        this.options.tracker.lookup(
          this.options.identity.agentId,
          digest,
          options.wantOriginGrant,
          this.access(),
          options.excludedAgents,
          options.expectedSize,
        ),
      );
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  resolveTag(key: TagKey, signal?: AbortSignal): Promise<TagRecord | undefined> {
    try {
      signal?.throwIfAborted();
      if (this.closed) throw new TrackerError("ERR_TRACKER_CLOSED", "tracker client is closed");
      if (!this.connected) throw new TrackerError("ERR_TRACKER_UNAVAILABLE", "no session with the in-process tracker");
      return Promise.resolve(this.options.tracker.resolveTag(this.options.identity.agentId, key, this.access()));
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  publishTag(record: TagRecord): void {
    const valid = validateTagRecord(record);
    if (this.closed) return;
    this.tags.add(valid);
    this.send((session) => {
      session.publishTag(valid);
    });
  }

  announce(announcement: BlobAnnouncement): void {
    const entry = inventoryEntry(validateAnnouncement(announcement));
    if (this.closed) return;
    this.inventory.set(entry.digest, entry);
    this.send((session) => {
      session.announce(entry);
    });
  }

  withdraw(digest: Digest): void {
    if (this.closed) return;
    this.inventory.delete(digest);
    this.send((session) => {
      session.withdraw(digest);
    });
  }

  /** Throws ERR_TRACKER_INVALID_ARGUMENT unless `count` is a whole number ≥ 0. */
  setActiveUploads(count: number): void {
    this.activeUploads = validateActiveUploads(count);
    this.send((session) => {
      session.heartbeat(count);
    });
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    clearTimeout(this.timer);
    const wasConnected = this.connected;
    this.session?.close();
    this.session = undefined;
    if (wasConnected) this.options.onConnectionChange?.(false);
    return Promise.resolve();
  }

  private access(): { membership?: Membership } {
    return this.options.membership === undefined ? {} : { membership: this.options.membership };
  }

  private register(): TrackerSession {
    const session = this.options.tracker.register(this.options.identity, {
      ...this.access(),
      ...(this.options.acceptNotices === false
        ? {}
        : {
            // Delivered on a later turn of the event loop, as over gRPC: never inside the announce that caused it.
            onNotice: (digest: Digest, change: BlobChange | undefined) => {
              setImmediate(() => {
                if (!this.closed) this.notices.notify(digest, change);
              });
              return true;
            },
          }),
      onClose: (reason) => {
        this.logger.warn({ reason }, "tracker ended the session; registering again");
        this.options.onConnectionChange?.(false);
        this.scheduleReregister();
      },
    });
    for (const announcement of this.inventory.values())
      this.sendTo(session, (s) => {
        s.announce(announcement);
      });
    for (const record of this.tags.all())
      this.sendTo(session, (s) => {
        s.publishTag(record);
      });
    if (this.activeUploads > 0) session.heartbeat(this.activeUploads);
    this.options.onConnectionChange?.(true);
    return session;
  }

  private scheduleReregister(): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      if (this.closed) return;
      try {
        this.session = this.register();
      } catch (error) {
        this.logger.warn({ err: error }, "registering with the tracker failed; retrying");
        this.scheduleReregister();
      }
    }, this.options.reregisterDelayMs ?? DEFAULT_REREGISTER_DELAY_MS);
    this.timer.unref();
  }

  private send(action: (session: TrackerSession) => void): void {
    if (this.session?.open === true) this.sendTo(this.session, action);
  }

  /** The tracker refusing one announcement (disagreeing with every claim, or excluded) leaves the session as it is, as over gRPC. */
  private sendTo(session: TrackerSession, action: (session: TrackerSession) => void): void {
    try {
      action(session);
    } catch (error) {
      if (!isTrackerError(error)) throw error;
      this.logger.warn({ err: error }, "tracker refused a message");
    }
  }
}
