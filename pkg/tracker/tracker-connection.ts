import { type ChannelCredentials, type ClientDuplexStream, Metadata, type StatusObject, status } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type SessionRequest, type SessionResponse, TrackerServiceClient } from "../gen/tracker/v1/tracker.js";
import { Backoff, signalReason } from "../util/index.js";
import { TrackerError } from "./errors.js";
import { decideRedirect } from "./leader-redirect.js";
import type { AgentIdentity } from "./tracker.js";
import { type TrackerChannelOptions, trackerChannelOptions, trackerCredentials } from "./tracker-channel.js";
import { registerRequest } from "./wire.js";

/** A lookup answers within this or fails: the agent then goes to the origin instead of waiting. */
export const DEFAULT_LOOKUP_TIMEOUT_MS = 2_000;
/**
 * How long after it starts, or after it lost its session, a client waits for a session before a lookup
 * treats the tracker as away. An agent the kubelet just restarted answers its mirror within a few hundred
 * ms, before its session is up (certificate, Service, a redirect to the leader, a failed first dial); an
 * agent whose tracker restarted or handed over is back within a backoff or two. Pulls go on meanwhile,
 * and without this the agent would fetch from the origin without a grant ("no tracker") what its peers
 * already hold, or what every other agent pulling a new blob fetches at the same moment. A session
 * abandoned for answering nothing (abandon) is a lost one: the grace follows it too.
 */
export const DEFAULT_SESSION_GRACE_MS = 5_000;
/**
 * Past the session grace, a lookup that finds the client backing off dials at once rather than fail
 * (and the pull go to the origin without a grant) while the next attempt is seconds away: the backoff
 * grows to 10 s during a long outage, and a tracker that is back (a new leader, a restarted pod) would
 * otherwise be found only when the timer fires, after every agent pulling a new image meanwhile has
 * fetched it from the origin. At most one such dial per this interval, so a tracker that stays away costs
 * a dial a second per agent while it pulls, not one per lookup.
 */
export const DEFAULT_REDIAL_ON_DEMAND_MS = 1_000;
/**
 * An agent that announced blobs while it had no session (it fetched them from the origin with no tracker)
 * is the only one that knows where they are; until it registers again, a new leader takes them for new
 * and grants the origin to the next agent that asks. So it dials once per DEFAULT_REDIAL_ON_DEMAND_MS, like
 * a lookup, until a session is up (newsPending), for at most this long after its last such change. A
 * fail-over (a frozen or killed leader, the other replica taking the Lease) takes 15–20 s; a tracker away
 * for longer is down, and the news then waits for the backoff's timer like everything else, so a long
 * outage costs neither a dial nor a `tracker session failed` warning a second per agent.
 */
export const DEFAULT_NEWS_REDIAL_WINDOW_MS = 60_000;
/** Why a session was dialed ahead of the backoff's timer: the `reason` of its `tracker session registered` log. */
const DIALED_FOR_LOOKUP = "dialed for a lookup, ahead of the backoff";
const DIALED_FOR_NEWS = "dialed to announce blobs the tracker has not heard of, ahead of the backoff";
/**
 * Redirects followed in a row before going back to the Service: replicas that agree on the leader need
 * one hop; more means a hand-over in progress or stale data, where backing off is right.
 */
const MAX_REDIRECTS_IN_A_ROW = 1;
/** On close, how long the tracker has to acknowledge the end of the session before it is cancelled. */
const CLOSE_TIMEOUT_MS = 1_000;

export interface TrackerConnectionOptions extends TrackerChannelOptions {
  /** host:port of the tracker. */
  readonly address: string;
  /** Validated. */
  readonly identity: AgentIdentity;
  readonly logger: Logger;
  readonly lookupTimeoutMs?: number;
  /** DEFAULT_SESSION_GRACE_MS unless given; 0 fails lookups at once whenever no session is up. */
  readonly sessionGraceMs?: number;
  /** DEFAULT_REDIAL_ON_DEMAND_MS unless given; 0 never dials on a lookup's or the news' behalf (only the backoff's timer does). */
  readonly redialOnDemandMs?: number;
  /** DEFAULT_NEWS_REDIAL_WINDOW_MS unless given. */
  readonly newsRedialWindowMs?: number;
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
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
}

/** What the owner of a connection (GrpcTrackerClient) does as its sessions come and go. */
export interface ConnectionHooks {
  /** Blobs the agent holds: said when registering (the tracker waits for them) and logged. */
  inventorySize(): number;
  /**
   * A session registered: the tracker knows nothing of this agent yet. `resumed`: a session was registered
   * before (this is a reconnect); `reannounceSpreadMs`: the tracker's spread for re-announcing.
   */
  registered(resumed: boolean, reannounceSpreadMs: number): void;
  /** A message of the registered session other than `registered` (notices, commands). */
  message(response: SessionResponse): void;
  /** The session's stream ended, failed or was closed (registered or not): nothing more is written to it. */
  ended(): void;
  /** A registered session was lost or closed (after `ended`). */
  lost(): void;
}

type State = "connecting" | "connected" | "backoff" | "closed";

/**
 * The agent's session with the tracker: one Session stream at a time, dialed, registered, redirected to
 * the leader a follower names, and dialed again with capped exponential backoff and jitter when it ends.
 * Unary calls (Lookup, ResolveTag) go through the channel of the registered session (readyClient), with a
 * deadline, and fail with ERR_TRACKER_UNAVAILABLE instead of waiting for a tracker that is not there. A
 * session that answers none of two calls in a row is abandoned: dead without a word (sessionCall in
 * tracker-unary.ts asks again, and on the next session).
 */
export class TrackerConnection {
  private readonly backoff: Backoff;
  private readonly logger: Logger;
  private readonly waiters = new Set<() => void>();
  private state: State = "connecting";
  private client: TrackerServiceClient | undefined;
  private call: ClientDuplexStream<SessionRequest, SessionResponse> | undefined;
  private trackerId: string | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  /** When (performance.now()) reconnectTimer fires; Infinity when none is set. */
  private reconnectAt = Number.POSITIVE_INFINITY;
  /** What the next session dials: the configured address (the Service), or a leader a follower named. */
  private target: string;
  private redirectsInARow = 0;
  private registerTimer: NodeJS.Timeout | undefined;
  private readonly unsubscribe: (() => void) | undefined;
  /** The current session's tracker said it sends notices (Registered.sends_notices). */
  private trackerSendsNotices = false;
  /** Until then (performance.now()), lookups wait for a session: set at start and when a session is lost (DEFAULT_SESSION_GRACE_MS). */
  private sessionGraceEnd: number;
  private readonly sessionGraceMs: number;
  /** The tracker refused a session outright (membership, bad identity): not a session still being set up. */
  private refused = false;
  /** When (performance.now()) the last session was dialed; -Infinity before the first. */
  private lastDialAt = Number.NEGATIVE_INFINITY;
  /** When (performance.now()) the inventory last changed with no session (newsPending); undefined once a session registered. */
  private newsAt: number | undefined;
  /** Why the session being set up was dialed ahead of the backoff's timer (DIALED_FOR_*), logged when it registers. */
  private dialReason: string | undefined;

  /** Dials at once. */
  constructor(
    private readonly options: TrackerConnectionOptions,
    private readonly hooks: ConnectionHooks,
  ) {
    this.logger = options.logger;
    this.sessionGraceMs = Math.max(0, options.sessionGraceMs ?? DEFAULT_SESSION_GRACE_MS);
    this.sessionGraceEnd = performance.now() + this.sessionGraceMs;
    this.target = options.address;
    this.backoff = new Backoff({
      ...(options.initialBackoffMs === undefined ? {} : { initialDelayMs: options.initialBackoffMs }),
      ...(options.maxBackoffMs === undefined ? {} : { maxDelayMs: options.maxBackoffMs }),
    });
    this.unsubscribe = options.tls?.subscribe(() => {
      this.onCertificate();
    });
    this.connect();
  }

  get connected(): boolean {
    return this.state === "connected";
  }

  get closed(): boolean {
    return this.state === "closed";
  }

  get sendsNotices(): boolean {
    return this.state === "connected" && this.trackerSendsNotices && this.options.acceptNotices !== false;
  }

  /** The registered session's stream; undefined while there is none. */
  get stream(): ClientDuplexStream<SessionRequest, SessionResponse> | undefined {
    return this.state === "connected" ? this.call : undefined;
  }

  /** The address the current or next session dials. */
  get address(): string {
    return this.target;
  }

  /** Resolves once a session is registered; rejects when `signal` aborts or the client is closed. */
  async whenConnected(signal?: AbortSignal): Promise<void> {
    while (this.state !== "connected") {
      signal?.throwIfAborted();
      if (this.state === "closed") throw new TrackerError("ERR_TRACKER_CLOSED", "tracker client is closed");
      await this.stateChange(signal);
    }
  }

  /** The client of a registered session and the deadline of a unary call starting now. */
  async readyClient(signal: AbortSignal | undefined): Promise<{ client: TrackerServiceClient; deadline: number }> {
    signal?.throwIfAborted();
    const timeoutMs = this.options.lookupTimeoutMs ?? DEFAULT_LOOKUP_TIMEOUT_MS;
    let deadline = Date.now() + timeoutMs;
    const graceLeftMs = this.refused ? 0 : this.sessionGraceEnd - performance.now();
    if (graceLeftMs > 0 && this.state !== "connected" && this.state !== "closed") {
      // Freshly started, or the session was lost moments ago: wait through failed attempts and backoff for a
      // session, until the grace ends (or the lookup's own deadline, if later); the call then gets its whole timeout.
      const waitUntil = performance.now() + Math.max(graceLeftMs, timeoutMs);
      while (!this.sessionSettled()) {
        const leftMs = waitUntil - performance.now();
        if (leftMs <= 0) break;
        await this.stateChange(signal, leftMs).catch(() => undefined);
        signal?.throwIfAborted();
      }
      deadline = Date.now() + timeoutMs;
    } else {
      // In backoff the tracker was away at the last attempt; if that was a while ago, find out now
      // (DEFAULT_REDIAL_ON_DEMAND_MS) instead of when the backoff's timer fires.
      if (this.redialDue()) {
        this.logger.debug({ address: this.options.address }, "a lookup dials the tracker ahead of the backoff");
        this.connect(DIALED_FOR_LOOKUP);
      }
      // Only an attempt under way is worth waiting for: otherwise the tracker is known to be away.
      if (this.state === "connecting") await this.stateChange(signal, deadline - Date.now()).catch(() => undefined);
    }
    signal?.throwIfAborted();
    if (this.state === "closed") throw new TrackerError("ERR_TRACKER_CLOSED", "tracker client is closed");
    const client = this.client;
    if (this.state !== "connected" || client === undefined) {
      throw new TrackerError("ERR_TRACKER_UNAVAILABLE", `no session with the tracker at ${this.target}`);
    }
    return { client, deadline };
  }

  /**
   * How long a unary call may take in all (sessionCall): its deadline and the session grace, as long as
   * a call made just after a lost session may already wait.
   */
  get callBudgetMs(): number {
    return (this.options.lookupTimeoutMs ?? DEFAULT_LOOKUP_TIMEOUT_MS) + this.sessionGraceMs;
  }

  /** `client` is the registered session's (a unary call's session is still the current one). */
  isCurrent(client: TrackerServiceClient): boolean {
    return this.state === "connected" && this.client === client;
  }

  /**
   * The registered session of `client` answered nothing to two calls in a row (sessionCall in
   * tracker-unary.ts): its connection died without a word, which keepalive would notice only seconds
   * later. The session ends as lost, so lookups wait for the next one within the session grace, and the
   * next is dialed at once on a connection of its own. Nothing when `client` is no longer current.
   */
  abandon(client: TrackerServiceClient): void {
    const call = this.call;
    if (!this.isCurrent(client) || call === undefined) return;
    this.onSessionEnded(call, { code: status.UNAVAILABLE, details: "no answer to two calls in a row", metadata: new Metadata() }, 0);
    call.cancel();
  }

  /**
   * The agent announced or withdrew a blob while it has no session (the next session sends the whole
   * inventory): dial again an interval after the last attempt (DEFAULT_REDIAL_ON_DEMAND_MS) instead of
   * when the backoff's timer fires, and keep to that interval until a session is up, for at most
   * DEFAULT_NEWS_REDIAL_WINDOW_MS after the last change. Not for a tracker that refused this agent.
   */
  newsPending(): void {
    if (this.state === "connected" || this.state === "closed") return;
    this.newsAt = performance.now();
    if (this.state === "backoff" && this.hurried())
      this.dialIn(this.lastDialAt + this.redialIntervalMs - performance.now(), DIALED_FOR_NEWS);
  }

  /** News the tracker has not heard of, recent enough to dial for (newsPending). */
  private hurried(): boolean {
    const windowMs = this.options.newsRedialWindowMs ?? DEFAULT_NEWS_REDIAL_WINDOW_MS;
    return this.newsAt !== undefined && !this.refused && this.redialIntervalMs > 0 && performance.now() - this.newsAt < windowMs;
  }

  private get redialIntervalMs(): number {
    return this.options.redialOnDemandMs ?? DEFAULT_REDIAL_ON_DEMAND_MS;
  }

  /** Backing off from a tracker that was away (not one that refused this agent), last dialed an interval ago. */
  private redialDue(): boolean {
    const intervalMs = this.redialIntervalMs;
    return this.state === "backoff" && !this.refused && intervalMs > 0 && performance.now() - this.lastDialAt >= intervalMs;
  }

  /** Dials again in `delayMs` (from backoff), or keeps the timer already set when it fires sooner. */
  private dialIn(delayMs: number, reason?: string): void {
    const at = performance.now() + Math.max(0, delayMs);
    if (at >= this.reconnectAt) return;
    clearTimeout(this.reconnectTimer);
    this.reconnectAt = at;
    this.reconnectTimer = setTimeout(
      () => {
        this.reconnectAt = Number.POSITIVE_INFINITY;
        if (this.state === "backoff") this.connect(reason);
      },
      Math.max(0, delayMs),
    );
    this.reconnectTimer.unref();
  }

  /** A session is up, the client closed, or the tracker refused this agent: nothing more to wait for. */
  private sessionSettled(): boolean {
    return this.state === "connected" || this.state === "closed" || this.refused;
  }

  /** Ends the session cleanly (the tracker drops this agent's announcements and grants at once). */
  async close(): Promise<void> {
    if (this.state === "closed") return;
    const wasConnected = this.state === "connected";
    this.state = "closed";
    this.unsubscribe?.();
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.registerTimer);
    this.hooks.ended();
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
    if (wasConnected) this.hooks.lost();
    this.logger.info("tracker session closed");
  }

  /** `reason`: why this dial comes ahead of the backoff's timer (logged when the session registers). */
  private connect(reason?: string): void {
    clearTimeout(this.reconnectTimer);
    this.reconnectAt = Number.POSITIVE_INFINITY;
    this.dialReason = reason;
    this.state = "connecting";
    this.lastDialAt = performance.now();
    this.client?.close();
    this.client = undefined;
    let channelCredentials: ChannelCredentials;
    try {
      channelCredentials = trackerCredentials(this.options);
    } catch (error: unknown) {
      // No certificate yet: try again later, like a tracker that cannot be reached.
      this.state = "backoff";
      this.dialReason = undefined;
      const delayMs = this.backoff.next();
      this.target = this.options.address;
      this.logger.warn({ err: error, retryInMs: delayMs, address: this.target }, "tracker session not started");
      this.dialIn(delayMs);
      this.wake();
      return;
    }
    const client = new TrackerServiceClient(this.target, channelCredentials, trackerChannelOptions(this.options));
    this.client = client;
    const call = client.session();
    this.call = call;
    call.on("data", (response: SessionResponse) => {
      if (call !== this.call) return;
      const kind = response.kind;
      if (kind?.$case === "registered") this.onRegistered(kind.value.trackerId, kind.value.reannounceSpreadMs, kind.value.sendsNotices);
      else if (this.state === "connected") this.hooks.message(response);
    });
    // Failures arrive as the final status below; this listener only keeps them from being thrown.
    call.on("error", () => undefined);
    call.on("status", (result: StatusObject) => {
      this.onSessionEnded(call, result);
    });
    // Says how many blobs will follow: while they do, the tracker grants nobody the origin for a blob it does not know yet.
    call.write(registerRequest(this.options.identity, this.hooks.inventorySize(), this.options.acceptNotices !== false));
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

  /**
   * A new certificate. A session is authenticated when it opens and stays bound to the same identity
   * across rotations, so an open session is kept (re-registering would drop this agent's holdings and
   * grants for a moment); the next connection presents the new certificate. Only an attempt waiting
   * for a first certificate starts at once.
   */
  private onCertificate(): void {
    if (this.state !== "backoff") return;
    this.connect();
  }

  private onRegistered(trackerId: string, reannounceSpreadMs: number, sendsNotices: boolean): void {
    if (this.state !== "connecting") return;
    this.trackerSendsNotices = sendsNotices;
    clearTimeout(this.registerTimer);
    this.redirectsInARow = 0;
    const previous = this.trackerId;
    this.trackerId = trackerId;
    this.refused = false;
    this.newsAt = undefined;
    this.state = "connected";
    this.backoff.reset();
    this.logger.info(
      {
        trackerId,
        address: this.target,
        newTracker: previous !== undefined && previous !== trackerId,
        blobs: this.hooks.inventorySize(),
        notices: sendsNotices,
        ...(this.dialReason === undefined ? {} : { reason: this.dialReason }),
      },
      "tracker session registered",
    );
    this.dialReason = undefined;
    this.hooks.registered(previous !== undefined, reannounceSpreadMs);
    this.wake();
  }

  /** `retryInMs`: when to dial again, unless redirected (the backoff's next delay when absent). */
  private onSessionEnded(call: ClientDuplexStream<SessionRequest, SessionResponse>, result: StatusObject, retryInMs?: number): void {
    if (call !== this.call || this.state === "closed") return;
    this.call = undefined;
    this.hooks.ended();
    clearTimeout(this.registerTimer);
    const wasConnected = this.state === "connected";
    // Lookups wait a moment for the next session before treating the tracker as away (DEFAULT_SESSION_GRACE_MS).
    if (wasConnected) this.sessionGraceEnd = performance.now() + this.sessionGraceMs;
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
      // The hop to the leader is the same attempt: it keeps the reason it was dialed for.
      this.connect(this.dialReason);
      if (wasConnected) this.hooks.lost();
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
    const refused = result.code === status.PERMISSION_DENIED || result.code === status.INVALID_ARGUMENT;
    if (refused) this.refused = true;
    let delayMs = retryInMs ?? this.backoff.next();
    // Blobs the tracker has not heard of: keep to the redial interval rather than back off further (newsPending).
    const hurry = this.hurried() && delayMs > this.redialIntervalMs;
    if (hurry) delayMs = this.redialIntervalMs;
    this.dialReason = undefined;
    const level = refused ? "error" : "warn";
    this.logger[level](
      { code: status[result.code], details: result.details, retryInMs: delayMs, address: dialed },
      wasConnected ? "tracker session lost" : "tracker session failed",
    );
    this.dialIn(delayMs, hurry ? DIALED_FOR_NEWS : undefined);
    if (wasConnected) this.hooks.lost();
    this.wake();
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
        if (signal !== undefined) done(signalReason(signal));
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
