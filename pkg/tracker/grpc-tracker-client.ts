import { Metadata } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { ResolveTagResponse, SessionResponse } from "../gen/tracker/v1/tracker.js";
import type { Digest } from "../oci/index.js";
import { InventorySync } from "./inventory-sync.js";
import { type PrefetchChannel, type PrefetchHandler, type PrefetchReport, validatePrefetchReport } from "./prefetch.js";
import type { ReannouncePacingOptions } from "./reannounce-pacing.js";
import { SessionInbox } from "./session-inbox.js";
import type {
  AgentIdentity,
  BlobAnnouncement,
  BlobChangeListener,
  LookupOptions,
  LookupResult,
  TagKey,
  TagRecord,
  Tracker,
} from "./tracker.js";
import { TrackerConnection, type TrackerConnectionOptions } from "./tracker-connection.js";
import { sessionCall, unaryCall } from "./tracker-unary.js";
import {
  inventoryEntry,
  validateActiveUploads,
  validateAnnouncement,
  validateIdentity,
  validateTagKey,
  validateTagRecord,
} from "./validation.js";
import { heartbeatRequest, lookupResultFromWire, prefetchReportRequest, tagRecordFromWire } from "./wire.js";

/** Heartbeats carry the load signal; the tracker ranks holders by it. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 5_000;

/** The connection's options (tracker-connection.ts), with the identity as given (it is validated here), and the client's own. */
export interface GrpcTrackerClientOptions extends TrackerConnectionOptions {
  readonly identity: AgentIdentity;
  readonly heartbeatIntervalMs?: number;
  /**
   * How the inventory is re-announced on a new session (reannounce-pacing.ts): after a lost session the
   * first batch waits randomly within `spreadMs`, then `batchBlobs` blobs every `batchIntervalMs`.
   */
  readonly reannounce?: ReannouncePacingOptions;
  /**
   * Called per BlobChanged notice received: it carried the change (delta), said only "look it up"
   * (lookup), or was malformed (handled as "look it up", or dropped when its digest is bad). For metrics.
   */
  readonly onNotice?: (kind: "delta" | "lookup" | "malformed") => void;
  /** Called with true when a session is registered and false when it is lost (e.g. for shoal_tracker_connected). */
  readonly onConnectionChange?: (connected: boolean) => void;
}

/**
 * The agent's Tracker over gRPC. Holds one Session stream, registers, sends heartbeats, and keeps an
 * inventory (the latest announcement per digest) that it sends in full after every (re)connect: a new
 * session always starts empty on the tracker, and a new tracker id means a new tracker altogether.
 * Reconnects with capped exponential backoff and jitter. The re-announce is paced (Reannouncer): the
 * session registers at once, saying how many blobs will follow, and the inventory follows in batches
 * after a random delay, so that a fail-over is not a storm; new announces and withdrawals go at once. Lookups have a deadline and fail with
 * ERR_TRACKER_UNAVAILABLE instead of waiting for a tracker that is not there; one that gets no answer is asked again on the same
 * session, then on the next one (sessionCall: a session silent twice in a row is taken for dead).
 */
export class GrpcTrackerClient implements Tracker, PrefetchChannel {
  /** The session: dial, register, redirect, reconnect (tracker-connection.ts). */
  private readonly connection: TrackerConnection;
  /** The inventory and tags, sent in full on every new session (inventory-sync.ts). */
  private readonly inventory: InventorySync;
  /** Notices and commands from the tracker (session-inbox.ts). */
  private readonly inbox: SessionInbox;
  private readonly logger: Logger;
  private readonly identity: AgentIdentity;
  private activeUploads = 0;
  private heartbeatTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: GrpcTrackerClientOptions) {
    this.identity = validateIdentity(options.identity);
    this.logger = options.logger;
    this.inbox = new SessionInbox({ logger: options.logger, ...(options.onNotice === undefined ? {} : { onNotice: options.onNotice }) });
    this.inventory = new InventorySync({
      logger: options.logger,
      ...(options.reannounce === undefined ? {} : { reannounce: options.reannounce }),
      stream: () => this.connection.stream,
    });
    this.connection = new TrackerConnection(
      { ...options, identity: this.identity },
      {
        inventorySize: () => this.inventory.size,
        registered: (resumed, reannounceSpreadMs) => {
          this.onRegistered(resumed, reannounceSpreadMs);
        },
        message: (response) => {
          this.onMessage(response);
        },
        ended: () => {
          clearInterval(this.heartbeatTimer);
          this.inventory.stop();
        },
        lost: () => {
          this.notify(false);
          this.inbox.sessionLost();
        },
      },
    );
  }

  get connected(): boolean {
    return this.connection.connected;
  }

  get sendsNotices(): boolean {
    return this.connection.sendsNotices;
  }

  /** Resolves once a session is registered; rejects when `signal` aborts or the client is closed. */
  async whenConnected(signal?: AbortSignal): Promise<void> {
    await this.connection.whenConnected(signal);
  }

  watchBlob(digest: Digest, listener: BlobChangeListener): () => void {
    return this.inbox.watchBlob(digest, listener);
  }

  async lookup(digest: Digest, options: LookupOptions): Promise<LookupResult> {
    const { signal } = options;
    const request = {
      agentId: this.identity.agentId,
      digest,
      wantOriginGrant: options.wantOriginGrant,
      excludedAgentIds: [...(options.excludedAgents ?? [])],
      expectedSize: options.expectedSize ?? 0,
    };
    return await sessionCall(this.connection, signal, (client, deadline) =>
      unaryCall(
        (callback) => client.lookup(request, new Metadata(), { deadline: new Date(deadline) }, callback),
        signal,
        () => this.connection.address,
        lookupResultFromWire,
      ),
    );
  }

  async resolveTag(key: TagKey, signal?: AbortSignal): Promise<TagRecord | undefined> {
    const valid = validateTagKey(key);
    const request = { agentId: this.identity.agentId, registry: valid.registry, repository: valid.repository, tag: valid.tag };
    return await sessionCall(this.connection, signal, (client, deadline) =>
      unaryCall(
        (callback) => client.resolveTag(request, new Metadata(), { deadline: new Date(deadline) }, callback),
        signal,
        () => this.connection.address,
        (response: ResolveTagResponse) =>
          response.record === undefined ? undefined : validateTagRecord(tagRecordFromWire(response.record)),
      ),
    );
  }

  /** Throws ERR_TRACKER_INVALID_ARGUMENT for a malformed record, which is then not kept. */
  publishTag(record: TagRecord): void {
    const valid = validateTagRecord(record);
    if (this.connection.closed) return;
    this.inventory.publishTag(valid);
    this.changedOffline();
  }

  /** Throws ERR_TRACKER_INVALID_ARGUMENT for a malformed announcement, which is then not kept. */
  announce(announcement: BlobAnnouncement): void {
    const entry = inventoryEntry(validateAnnouncement(announcement));
    if (this.connection.closed) return;
    this.inventory.announce(entry);
    this.changedOffline();
  }

  withdraw(digest: Digest): void {
    if (this.connection.closed) return;
    this.inventory.withdraw(digest);
    this.changedOffline();
  }

  /** An inventory change with no session to send it on: the next session is dialed sooner (TrackerConnection.newsPending). */
  private changedOffline(): void {
    if (!this.connection.connected) this.connection.newsPending();
  }

  /** Where prefetch assignments from the tracker go; without a handler they are ignored. */
  setPrefetchHandler(handler: PrefetchHandler | undefined): void {
    this.inbox.setPrefetchHandler(handler);
  }

  /**
   * Sends a prefetch report on the current session. Without a session it is dropped: the tracker
   * cancelled the session's assignments and assigns again, which asks for a fresh report.
   */
  reportPrefetch(report: PrefetchReport): void {
    const valid = validatePrefetchReport(report);
    // Written even while announces wait for 'drain': reports are few and the last one of a prefetch matters.
    this.connection.stream?.write(prefetchReportRequest(valid));
  }

  /** Throws ERR_TRACKER_INVALID_ARGUMENT unless `count` is a whole number ≥ 0. */
  setActiveUploads(count: number): void {
    this.activeUploads = validateActiveUploads(count);
  }

  /** Ends the session cleanly (the tracker drops this agent's announcements and grants at once). */
  async close(): Promise<void> {
    await this.connection.close();
  }

  /**
   * The tracker forgot this agent when the previous session ended: send the whole inventory again, paced
   * (after a lost session every other agent is doing the same to the same tracker).
   */
  private onRegistered(resumed: boolean, reannounceSpreadMs: number): void {
    this.inventory.restart(resumed, reannounceSpreadMs);
    this.sendHeartbeat();
    this.inventory.flush();
    this.heartbeatTimer = setInterval(() => {
      this.sendHeartbeat();
    }, this.options.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS);
    this.heartbeatTimer.unref();
    this.notify(true);
  }

  private onMessage(response: SessionResponse): void {
    if (response.kind?.$case === "blobChanged") this.inbox.notice(response.kind.value);
    else this.inbox.command(response);
  }

  private sendHeartbeat(): void {
    // Skipped while the buffer is full: a later heartbeat carries the newer count anyway.
    if (!this.inventory.paused) this.connection.stream?.write(heartbeatRequest(this.activeUploads));
  }

  private notify(connected: boolean): void {
    try {
      this.options.onConnectionChange?.(connected);
    } catch (error: unknown) {
      this.logger.error({ err: error }, "connection change callback failed");
    }
  }
}
