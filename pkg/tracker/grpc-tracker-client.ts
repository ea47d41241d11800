import {
  type ChannelCredentials,
  type ClientDuplexStream,
  Metadata,
  type ServiceError,
  type StatusObject,
  credentials,
  status,
} from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type IdentitySource, checkServer } from "../identity/index.js";
import { type BlobChanged, type SessionRequest, type SessionResponse, TrackerServiceClient } from "../gen/tracker/v1/tracker.js";
import type { Digest } from "../oci/index.js";
import { Backoff } from "../util/index.js";
import { TrackerError, type TrackerErrorCode } from "./errors.js";
import { decideRedirect } from "./leader-redirect.js";
import { NoticeListeners } from "./notice-listeners.js";
import { PublishedTags } from "./published-tags.js";
import { ReannouncePacing, type ReannouncePacingOptions, Reannouncer } from "./reannounce-pacing.js";
import {
  type PrefetchChannel,
  type PrefetchHandler,
  type PrefetchReport,
  validatePrefetchAssignment,
  validatePrefetchReport,
} from "./prefetch.js";
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
import {
  inventoryEntry,
  validateActiveUploads,
  validateAnnouncement,
  validateIdentity,
  validateTagKey,
  validateTagRecord,
} from "./validation.js";
import {
  announceRequests,
  commandFromWire,
  heartbeatRequest,
  lookupResultFromWire,
  noticeFromWire,
  prefetchReportRequest,
  registerRequest,
  tagRecordFromWire,
  tagSeenRequest,
  withdrawRequest,
} from "./wire.js";

/** Heartbeats carry the load signal; the tracker ranks holders by it. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 5_000;
/** A lookup answers within this or fails: the agent then goes to the origin instead of waiting. */
export const DEFAULT_LOOKUP_TIMEOUT_MS = 2_000;
/**
 * How long after it starts a client that never had a session waits for its first one before a lookup
 * treats the tracker as away. An agent the kubelet just restarted answers its mirror within a few hundred
 * ms, before its session is up (certificate, Service, a redirect to the leader, a failed first dial); the
 * node's runtime pulls again at once, and without this the agent would fetch from the origin without a
 * grant ("no tracker") what its peers already hold.
 */
export const DEFAULT_FIRST_SESSION_GRACE_MS = 5_000;
/** The client pings the tracker this often, so a vanished tracker is noticed within ~15 s. */
export const CLIENT_KEEPALIVE_TIME_MS = 10_000;
export const CLIENT_KEEPALIVE_TIMEOUT_MS = 5_000;
/** The TLS server name agents send (SNI); certificates are checked by role, not by this name. */
const TLS_SERVER_NAME = "shoal-controller";
/**
 * Redirects followed in a row before going back to the Service: replicas that agree on the leader need
 * one hop; more means a hand-over in progress or stale data, where backing off is right.
 */
const MAX_REDIRECTS_IN_A_ROW = 1;
/** On close, how long the tracker has to acknowledge the end of the session before it is cancelled. */
const CLOSE_TIMEOUT_MS = 1_000;

export interface GrpcTrackerClientOptions {
  /** host:port of the tracker. */
  readonly address: string;
  readonly identity: AgentIdentity;
  readonly logger: Logger;
  /** Fixed channel credentials (tests); insecure when neither this nor `identity` is given. */
  readonly credentials?: ChannelCredentials;
  /**
   * This agent's certificate: the tracker is reached over mutual TLS and must present a controller
   * certificate of the trust bundle. Each connection presents the certificate current when it is made.
   */
  readonly tls?: IdentitySource;
  readonly heartbeatIntervalMs?: number;
  readonly lookupTimeoutMs?: number;
  /** DEFAULT_FIRST_SESSION_GRACE_MS unless given; 0 fails lookups at once from the start, as after a lost session. */
  readonly firstSessionGraceMs?: number;
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
  readonly keepaliveTimeMs?: number;
  readonly keepaliveTimeoutMs?: number;
  /**
   * How the inventory is re-announced on a new session (reannounce-pacing.ts): after a lost session the
   * first batch waits randomly within `spreadMs`, then `batchBlobs` blobs every `batchIntervalMs`.
   */
  readonly reannounce?: ReannouncePacingOptions;
  /**
   * Maps the leader address a follower names (trailing metadata of its refusal) to the address to dial.
   * Identity when absent; tests route it through an endpoint that keeps the pod IP as source address.
   */
  readonly dialLeader?: (leaderAddress: string) => string;
  /**
   * Ask the tracker for BlobChanged notices (Register.accepts_notices); true by default. False behaves as an
   * agent from before notices (tests of mixed versions).
   */
  readonly acceptNotices?: boolean;
  /**
   * Called per BlobChanged notice received: it carried the change (delta), said only "look it up"
   * (lookup), or was malformed (handled as "look it up", or dropped when its digest is bad). For metrics.
   */
  readonly onNotice?: (kind: "delta" | "lookup" | "malformed") => void;
  /** Called with true when a session is registered and false when it is lost (e.g. for shoal_tracker_connected). */
  readonly onConnectionChange?: (connected: boolean) => void;
}

type State = "connecting" | "connected" | "backoff" | "closed";

/**
 * The agent's Tracker over gRPC. Holds one Session stream, registers, sends heartbeats, and keeps an
 * inventory (the latest announcement per digest) that it sends in full after every (re)connect: a new
 * session always starts empty on the tracker, and a new tracker id means a new tracker altogether.
 * Reconnects with capped exponential backoff and jitter. The re-announce is paced (Reannouncer): the
 * session registers at once, saying how many blobs will follow, and the inventory follows in batches
 * after a random delay, so that a fail-over is not a storm; new announces and withdrawals go at once. Lookups have a deadline and fail with
 * ERR_TRACKER_UNAVAILABLE instead of waiting for a tracker that is not there.
 */
export class GrpcTrackerClient implements Tracker, PrefetchChannel {
  private readonly inventory = new Map<Digest, BlobAnnouncement>();
  /** Digests whose current inventory entry (or absence: a withdraw) still has to be sent. */
  private readonly dirty = new Set<Digest>();
  /** Tags this agent resolved upstream, sent after every (re)connect like the inventory. */
  private readonly tags = new PublishedTags();
  private readonly backoff: Backoff;
  /** What of the inventory the current session has not been sent yet. */
  private readonly reannouncer: Reannouncer<Digest>;
  private readonly logger: Logger;
  private readonly identity: AgentIdentity;
  private readonly waiters = new Set<() => void>();
  private state: State = "connecting";
  private client: TrackerServiceClient | undefined;
  private call: ClientDuplexStream<SessionRequest, SessionResponse> | undefined;
  private awaitingDrain = false;
  private activeUploads = 0;
  private trackerId: string | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private prefetchHandler: PrefetchHandler | undefined;
  /** What the next session dials: the configured address (the Service), or a leader a follower named. */
  private target: string;
  private redirectsInARow = 0;
  private registerTimer: NodeJS.Timeout | undefined;
  private readonly unsubscribe: (() => void) | undefined;
  private readonly notices: NoticeListeners;
  /** The current session's tracker said it sends notices (Registered.sends_notices). */
  private trackerSendsNotices = false;
  /** Until then (performance.now()), a client that never registered waits for its first session (see DEFAULT_FIRST_SESSION_GRACE_MS). */
  private readonly firstSessionGraceEnd: number;
  /** The tracker refused a session outright (membership, bad identity): not a session still being set up. */
  private refused = false;

  constructor(private readonly options: GrpcTrackerClientOptions) {
    this.identity = validateIdentity(options.identity);
    this.logger = options.logger;
    this.firstSessionGraceEnd = performance.now() + Math.max(0, options.firstSessionGraceMs ?? DEFAULT_FIRST_SESSION_GRACE_MS);
    this.notices = new NoticeListeners(options.logger);
    this.target = options.address;
    this.backoff = new Backoff({
      ...(options.initialBackoffMs === undefined ? {} : { initialDelayMs: options.initialBackoffMs }),
      ...(options.maxBackoffMs === undefined ? {} : { maxDelayMs: options.maxBackoffMs }),
    });
    this.reannouncer = new Reannouncer<Digest>({
      pacing: new ReannouncePacing(options.reannounce),
      ready: () => !this.awaitingDrain,
      send: (batch) => {
        // Entries announced or withdrawn meanwhile were taken out of the queue (and are dirty already).
        for (const digest of batch) if (this.inventory.has(digest)) this.dirty.add(digest);
        this.flush();
        if (this.reannouncer.pending === 0) this.logger.info({ blobs: this.inventory.size }, "inventory re-announced");
      },
    });
    this.unsubscribe = options.tls?.subscribe(() => {
      this.onCertificate();
    });
    this.connect();
  }

  get connected(): boolean {
    return this.state === "connected";
  }

  get sendsNotices(): boolean {
    return this.state === "connected" && this.trackerSendsNotices && this.options.acceptNotices !== false;
  }

  watchBlob(digest: Digest, listener: BlobChangeListener): () => void {
    return this.notices.add(digest, listener);
  }

  /** Resolves once a session is registered; rejects when `signal` aborts or the client is closed. */
  async whenConnected(signal?: AbortSignal): Promise<void> {
    while (this.state !== "connected") {
      signal?.throwIfAborted();
      if (this.state === "closed") throw new TrackerError("ERR_TRACKER_CLOSED", "tracker client is closed");
      await this.stateChange(signal);
    }
  }

  async lookup(digest: Digest, options: LookupOptions): Promise<LookupResult> {
    const { signal } = options;
    const { client, deadline } = await this.readyClient(signal);
    const request = {
      agentId: this.identity.agentId,
      digest,
      wantOriginGrant: options.wantOriginGrant,
      excludedAgentIds: [...(options.excludedAgents ?? [])],
      expectedSize: options.expectedSize ?? 0,
    };
    return await new Promise<LookupResult>((resolve, reject) => {
      const onAbort = (): void => {
        call.cancel();
      };
      const call = client.lookup(request, new Metadata(), { deadline: new Date(deadline) }, (error: ServiceError | null, response) => {
        signal?.removeEventListener("abort", onAbort);
        if (signal?.aborted === true) reject(abortReason(signal));
        else if (error !== null) reject(lookupError(error, this.target));
        else resolve(lookupResultFromWire(response));
      });
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  async resolveTag(key: TagKey, signal?: AbortSignal): Promise<TagRecord | undefined> {
    const valid = validateTagKey(key);
    const { client, deadline } = await this.readyClient(signal);
    const request = { agentId: this.identity.agentId, registry: valid.registry, repository: valid.repository, tag: valid.tag };
    return await new Promise<TagRecord | undefined>((resolve, reject) => {
      const onAbort = (): void => {
        call.cancel();
      };
      const call = client.resolveTag(request, new Metadata(), { deadline: new Date(deadline) }, (error: ServiceError | null, response) => {
        signal?.removeEventListener("abort", onAbort);
        if (signal?.aborted === true) reject(abortReason(signal));
        else if (error !== null) reject(lookupError(error, this.target));
        else {
          try {
            resolve(response.record === undefined ? undefined : validateTagRecord(tagRecordFromWire(response.record)));
          } catch (invalid) {
            reject(invalid instanceof Error ? invalid : new Error(String(invalid)));
          }
        }
      });
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Throws ERR_TRACKER_INVALID_ARGUMENT for a malformed record, which is then not kept. */
  publishTag(record: TagRecord): void {
    const valid = validateTagRecord(record);
    if (this.state === "closed") return;
    this.tags.add(valid);
    this.flush();
  }

  /** Throws ERR_TRACKER_INVALID_ARGUMENT for a malformed announcement, which is then not kept. */
  announce(announcement: BlobAnnouncement): void {
    const entry = inventoryEntry(validateAnnouncement(announcement));
    if (this.state === "closed") return;
    this.inventory.set(entry.digest, entry);
    this.reannouncer.forget(entry.digest);
    this.dirty.add(entry.digest);
    this.flush();
  }

  withdraw(digest: Digest): void {
    if (this.state === "closed") return;
    this.inventory.delete(digest);
    this.reannouncer.forget(digest);
    this.dirty.add(digest);
    this.flush();
  }

  /** Where prefetch assignments from the tracker go; without a handler they are ignored. */
  setPrefetchHandler(handler: PrefetchHandler | undefined): void {
    this.prefetchHandler = handler;
  }

  /**
   * Sends a prefetch report on the current session. Without a session it is dropped: the tracker
   * cancelled the session's assignments and assigns again, which asks for a fresh report.
   */
  reportPrefetch(report: PrefetchReport): void {
    const valid = validatePrefetchReport(report);
    // Written even while announces wait for 'drain': reports are few and the last one of a prefetch matters.
    if (this.state === "connected") this.call?.write(prefetchReportRequest(valid));
  }

  /** The client of a registered session and the deadline of a unary call starting now. */
  private async readyClient(signal: AbortSignal | undefined): Promise<{ client: TrackerServiceClient; deadline: number }> {
    signal?.throwIfAborted();
    const timeoutMs = this.options.lookupTimeoutMs ?? DEFAULT_LOOKUP_TIMEOUT_MS;
    let deadline = Date.now() + timeoutMs;
    const graceLeftMs = this.trackerId === undefined && !this.refused ? this.firstSessionGraceEnd - performance.now() : 0;
    if (graceLeftMs > 0 && this.state !== "connected" && this.state !== "closed") {
      // Freshly started: wait through failed attempts and backoff for the first session, until the grace ends
      // (or the lookup's own deadline, if later); the call then gets its whole timeout.
      const waitUntil = performance.now() + Math.max(graceLeftMs, timeoutMs);
      while (!this.firstSessionSettled()) {
        const leftMs = waitUntil - performance.now();
        if (leftMs <= 0) break;
        await this.stateChange(signal, leftMs).catch(() => undefined);
        signal?.throwIfAborted();
      }
      deadline = Date.now() + timeoutMs;
    } else if (this.state === "connecting") {
      // Only an attempt already under way is worth waiting for; in backoff the tracker is known to be away.
      await this.stateChange(signal, deadline - Date.now()).catch(() => undefined);
    }
    signal?.throwIfAborted();
    if (this.state === "closed") throw new TrackerError("ERR_TRACKER_CLOSED", "tracker client is closed");
    const client = this.client;
    if (this.state !== "connected" || client === undefined) {
      throw new TrackerError("ERR_TRACKER_UNAVAILABLE", `no session with the tracker at ${this.target}`);
    }
    return { client, deadline };
  }

  /** A session is up, the client closed, or the tracker refused this agent: nothing more to wait for. */
  private firstSessionSettled(): boolean {
    return this.state === "connected" || this.state === "closed" || this.refused;
  }

  /** Throws ERR_TRACKER_INVALID_ARGUMENT unless `count` is a whole number ≥ 0. */
  setActiveUploads(count: number): void {
    this.activeUploads = validateActiveUploads(count);
  }

  /** Ends the session cleanly (the tracker drops this agent's announcements and grants at once). */
  async close(): Promise<void> {
    if (this.state === "closed") return;
    const wasConnected = this.state === "connected";
    this.state = "closed";
    this.unsubscribe?.();
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.registerTimer);
    clearInterval(this.heartbeatTimer);
    this.reannouncer.stop();
    const call = this.call;
    this.call = undefined;
    this.wake();
    // A session that never registered has nothing to end gracefully: cancel it at once.
    if (call !== undefined && !wasConnected) call.cancel();
    else if (call !== undefined) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          call.cancel();
          resolve();
        }, CLOSE_TIMEOUT_MS);
        call.once("status", () => {
          clearTimeout(timer);
          resolve();
        });
        call.end();
      });
    }
    this.client?.close();
    if (wasConnected) {
      this.notify(false);
      this.sessionLost();
    }
    this.logger.info("tracker session closed");
  }

  private connect(): void {
    this.state = "connecting";
    this.client?.close();
    this.client = undefined;
    let channelCredentials: ChannelCredentials;
    try {
      channelCredentials = this.channelCredentials();
    } catch (error: unknown) {
      // No certificate yet: try again later, like a tracker that cannot be reached.
      this.state = "backoff";
      const delayMs = this.backoff.next();
      this.target = this.options.address;
      this.logger.warn({ err: error, retryInMs: delayMs, address: this.target }, "tracker session not started");
      this.reconnectTimer = setTimeout(() => {
        if (this.state === "backoff") this.connect();
      }, delayMs);
      this.reconnectTimer.unref();
      this.wake();
      return;
    }
    const client = new TrackerServiceClient(this.target, channelCredentials, {
      // The controller's certificate is checked for its role, not a host name: agents may dial the
      // tracker by Service name or by address. A fixed TLS server name also avoids SNI with an IP.
      ...(this.options.tls === undefined ? {} : { "grpc.ssl_target_name_override": TLS_SERVER_NAME }),
      "grpc.keepalive_time_ms": this.options.keepaliveTimeMs ?? CLIENT_KEEPALIVE_TIME_MS,
      "grpc.keepalive_timeout_ms": this.options.keepaliveTimeoutMs ?? CLIENT_KEEPALIVE_TIMEOUT_MS,
      "grpc.keepalive_permit_without_calls": 1,
    });
    this.client = client;
    const call = client.session();
    this.call = call;
    this.awaitingDrain = false;
    call.on("data", (response: SessionResponse) => {
      if (call !== this.call) return;
      const kind = response.kind;
      if (kind?.$case === "registered") this.onRegistered(kind.value.trackerId, kind.value.reannounceSpreadMs, kind.value.sendsNotices);
      else if (kind?.$case === "blobChanged") {
        if (this.state === "connected") this.onNotice(kind.value);
      } else if (this.state === "connected") this.onCommand(response);
    });
    // Failures arrive as the final status below; this listener only keeps them from being thrown.
    call.on("error", () => undefined);
    call.on("status", (result: StatusObject) => {
      this.onSessionEnded(call, result);
    });
    // Says how many blobs will follow: while they do, the tracker grants nobody the origin for a blob it does not know yet.
    call.write(registerRequest(this.identity, this.inventory.size, this.options.acceptNotices !== false));
    if (this.target !== this.options.address) {
      // A redirect target is only as good as the replica that named it: if it does not register the
      // session within a lookup's deadline, give up on it and go back to the Service.
      const timeoutMs = this.options.lookupTimeoutMs ?? DEFAULT_LOOKUP_TIMEOUT_MS;
      this.registerTimer = setTimeout(() => {
        if (call !== this.call || this.state !== "connecting") return;
        this.logger.warn({ address: this.target, timeoutMs }, "the leader a follower named did not register the session in time");
        call.cancel();
      }, timeoutMs);
      this.registerTimer.unref();
    }
  }

  /** TLS with this agent's current certificate, the given credentials, or plaintext. Throws without a certificate. */
  private channelCredentials(): ChannelCredentials {
    const identity = this.options.tls;
    if (identity === undefined) return this.options.credentials ?? credentials.createInsecure();
    const material = identity.current();
    if (material === undefined) throw new TrackerError("ERR_TRACKER_UNAVAILABLE", "this agent holds no certificate yet");
    return credentials.createSsl(Buffer.from(material.trustBundlePem), Buffer.from(material.keyPem), Buffer.from(material.certificatePem), {
      checkServerIdentity: checkServer({ role: "controller" }),
    });
  }

  /**
   * A new certificate. A session is authenticated when it opens and stays bound to the same identity
   * across rotations, so an open session is kept (re-registering would drop this agent's holdings and
   * grants for a moment); the next connection presents the new certificate. Only an attempt waiting
   * for a first certificate starts at once.
   */
  private onCertificate(): void {
    if (this.state !== "backoff") return;
    clearTimeout(this.reconnectTimer);
    this.connect();
  }

  /**
   * A BlobChanged notice: handed to the downloads of its digest with its change, or without one (look it
   * up) when it carried none or a malformed one. One with a bad digest is dropped: nobody waits for it.
   */
  private onNotice(notice: BlobChanged): void {
    let parsed: ReturnType<typeof noticeFromWire>;
    try {
      parsed = noticeFromWire(notice);
    } catch (error: unknown) {
      this.options.onNotice?.("malformed");
      this.logger.debug({ err: error }, "tracker notice with a malformed digest dropped");
      return;
    }
    if (parsed.malformed !== undefined) {
      this.options.onNotice?.("malformed");
      this.logger.debug(
        { digest: parsed.digest, reason: parsed.malformed },
        "tracker notice with a malformed change; looking the blob up instead",
      );
    } else this.options.onNotice?.(parsed.change === undefined ? "lookup" : "delta");
    this.notices.notify(parsed.digest, parsed.change);
  }

  private onRegistered(trackerId: string, reannounceSpreadMs: number, sendsNotices: boolean): void {
    if (this.state !== "connecting") return;
    this.trackerSendsNotices = sendsNotices;
    clearTimeout(this.registerTimer);
    this.redirectsInARow = 0;
    const previous = this.trackerId;
    this.trackerId = trackerId;
    this.state = "connected";
    this.backoff.reset();
    this.logger.info(
      {
        trackerId,
        address: this.target,
        newTracker: previous !== undefined && previous !== trackerId,
        blobs: this.inventory.size,
        notices: sendsNotices,
      },
      "tracker session registered",
    );
    // The tracker forgot this agent when the previous session ended: send the whole inventory again, paced
    // (after a lost session every other agent is doing the same to the same tracker).
    this.dirty.clear();
    this.reannouncer.start(this.inventory.keys(), previous !== undefined, reannounceSpreadMs);
    this.tags.markAllUnsent();
    this.sendHeartbeat();
    this.flush();
    this.heartbeatTimer = setInterval(() => {
      this.sendHeartbeat();
    }, this.options.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS);
    this.heartbeatTimer.unref();
    this.notify(true);
    this.wake();
  }

  /** A command from the tracker (prefetch); a malformed one is logged and dropped, the session stays. */
  private onCommand(response: SessionResponse): void {
    let command;
    try {
      command = commandFromWire(response);
      if (command?.kind === "prefetch") command = { kind: "prefetch" as const, assignment: validatePrefetchAssignment(command.assignment) };
    } catch (error: unknown) {
      this.logger.warn({ err: error }, "malformed command from the tracker ignored");
      return;
    }
    if (command === undefined) return;
    try {
      this.prefetchHandler?.onCommand(command);
    } catch (error: unknown) {
      this.logger.error({ err: error, command: command.kind }, "prefetch handler failed");
    }
  }

  private sessionLost(): void {
    try {
      this.prefetchHandler?.onSessionLost();
    } catch (error: unknown) {
      this.logger.error({ err: error }, "prefetch handler failed");
    }
  }

  private onSessionEnded(call: ClientDuplexStream<SessionRequest, SessionResponse>, result: StatusObject): void {
    if (call !== this.call || this.state === "closed") return;
    this.call = undefined;
    clearInterval(this.heartbeatTimer);
    this.reannouncer.stop();
    clearTimeout(this.registerTimer);
    const wasConnected = this.state === "connected";
    const dialed = this.target;
    const redirect = decideRedirect(result.code, result.metadata, {
      redirectsInARow: this.redirectsInARow,
      maxRedirects: MAX_REDIRECTS_IN_A_ROW,
      current: dialed,
    });
    // Every attempt that is not a redirect starts again from the Service.
    this.target = this.options.address;
    if (redirect.kind === "follow") {
      // A follower refusing a new session, or a leader handing over: dial the leader it names at once.
      this.redirectsInARow++;
      this.target = this.options.dialLeader?.(redirect.address) ?? redirect.address;
      this.logger.info({ address: dialed, leader: redirect.address, details: result.details, wasConnected }, "redirected to the leader");
      this.connect();
      if (wasConnected) {
        this.notify(false);
        this.sessionLost();
      }
      // Not woken: lookups waiting for a session keep waiting (within their deadline) for this attempt.
      return;
    }
    this.redirectsInARow = 0;
    if (redirect.kind === "refuse")
      this.logger.warn(
        { address: dialed, reason: redirect.reason },
        "not following the redirect to the leader; back to the tracker Service",
      );
    this.state = "backoff";
    const delayMs = this.backoff.next();
    const refused = result.code === status.PERMISSION_DENIED || result.code === status.INVALID_ARGUMENT;
    if (refused) this.refused = true;
    const level = refused ? "error" : "warn";
    this.logger[level](
      { code: status[result.code], details: result.details, retryInMs: delayMs, address: dialed },
      wasConnected ? "tracker session lost" : "tracker session failed",
    );
    this.reconnectTimer = setTimeout(() => {
      if (this.state === "backoff") this.connect();
    }, delayMs);
    this.reconnectTimer.unref();
    if (wasConnected) {
      this.notify(false);
      this.sessionLost();
    }
    this.wake();
  }

  /** Sends pending announces and withdrawals in order, pausing while the stream's buffer is full. */
  private flush(): void {
    const call = this.call;
    if (this.state !== "connected" || call === undefined || this.awaitingDrain) return;
    const awaitDrain = (): void => {
      this.awaitingDrain = true;
      call.once("drain", () => {
        if (call !== this.call) return;
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

  private sendHeartbeat(): void {
    // Skipped while the buffer is full: a later heartbeat carries the newer count anyway.
    if (this.state === "connected" && !this.awaitingDrain) this.call?.write(heartbeatRequest(this.activeUploads));
  }

  private notify(connected: boolean): void {
    try {
      this.options.onConnectionChange?.(connected);
    } catch (error: unknown) {
      this.logger.error({ err: error }, "connection change callback failed");
    }
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }

  /** Resolves at the next state change; rejects on abort or after `timeoutMs`. */
  private stateChange(signal?: AbortSignal, timeoutMs?: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const done = (error?: Error): void => {
        this.waiters.delete(waiter);
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        if (error === undefined) resolve();
        else reject(error);
      };
      const waiter = (): void => {
        done();
      };
      const onAbort = (): void => {
        done(abortReason(signal));
      };
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(
              () => {
                done(new TrackerError("ERR_TRACKER_UNAVAILABLE", "timed out waiting for the tracker session"));
              },
              Math.max(0, timeoutMs),
            );
      this.waiters.add(waiter);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}

/** gRPC status of a failed lookup → TrackerError. Everything transport-like is ERR_TRACKER_UNAVAILABLE. */
function lookupError(error: ServiceError, address: string): TrackerError {
  const codes: Partial<Record<status, TrackerErrorCode>> = {
    [status.FAILED_PRECONDITION]: "ERR_TRACKER_NOT_REGISTERED",
    [status.PERMISSION_DENIED]: "ERR_TRACKER_PERMISSION_DENIED",
    [status.INVALID_ARGUMENT]: "ERR_TRACKER_INVALID_ARGUMENT",
  };
  const code = codes[error.code] ?? "ERR_TRACKER_UNAVAILABLE";
  return new TrackerError(code, `tracker lookup at ${address} failed: ${status[error.code]} ${error.details}`, { cause: error });
}

function abortReason(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason;
  return reason instanceof Error ? reason : new DOMException("The operation was aborted", "AbortError");
}
