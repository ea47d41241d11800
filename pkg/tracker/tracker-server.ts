import { X509Certificate } from "node:crypto";
import {
  type Metadata,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type sendUnaryData,
  status,
} from "@grpc/grpc-js";
import type { Logger } from "pino";
import {
  type IdentitySource,
  TlsListener,
  type WorkloadIdentity,
  describeIdentity,
  identityHasAddress,
  identityOfCertificate,
  identityUri,
} from "../identity/index.js";
import {
  type LookupRequest,
  type LookupResponse,
  type ResolveTagRequest,
  type ResolveTagResponse,
  type SessionRequest,
  type SessionResponse,
  TrackerServiceService,
} from "../gen/tracker/v1/tracker.js";
import type { ControllerMetrics } from "../metrics/index.js";
import { AnnounceGate } from "./announce-gate.js";
import { TrackerError, isTrackerError } from "./errors.js";
import { spreadForSessions } from "./reannounce-pacing.js";
import { type Membership, hostOfPeer } from "./membership.js";
import type { MemoryTracker } from "./memory-tracker.js";
import type { TrackerSession } from "./tracker-session.js";
import {
  validateAgentId,
  validateAnnouncement,
  validateDigest,
  validateIdentity,
  validateTagKey,
  validateTagRecord,
} from "./validation.js";
import { validatePrefetchReport } from "./prefetch.js";
import { leaderAddressMetadata, parseLeaderAddress } from "./leader-redirect.js";
import {
  MAX_SESSION_MESSAGE_BYTES,
  announcementFromWire,
  commandResponse,
  identityFromWire,
  lookupResponse,
  prefetchReportFromWire,
  tagRecordFromWire,
  tagRecordToWire,
} from "./wire.js";
import type { AgentIdentity } from "./tracker.js";
import { noticeWriter } from "./notice-writer.js";

/** The server pings an idle connection this often, so a dead agent's session ends within ~15 s. */
export const SERVER_KEEPALIVE_TIME_MS = 10_000;
export const SERVER_KEEPALIVE_TIMEOUT_MS = 5_000;
/** On close, how long lookups in flight may finish before the server is cut. */
const DEFAULT_CLOSE_GRACE_MS = 1_000;

/** Excluded holders one lookup may name; a swarm has far fewer bad peers than this. */
const MAX_EXCLUDED_AGENTS = 256;

export interface TrackerServerOptions {
  readonly host: string;
  readonly port: number;
  readonly tracker: MemoryTracker;
  /** Open (self-registration) when absent. */
  readonly membership?: Membership;
  /** Counts requests this edge rejects before they reach the tracker; the tracker counts the rest. */
  readonly metrics?: ControllerMetrics;
  readonly logger: Logger;
  readonly keepaliveTimeMs?: number;
  readonly keepaliveTimeoutMs?: number;
  /**
   * Whether this server serves now; when it returns a reason, new sessions and lookups are refused with
   * UNAVAILABLE and that reason (a controller replica that is not the leader). Always serving when absent.
   */
  readonly serving?: () => true | string;
  /**
   * Where the tracker that serves instead is (the leader's `IP:port`), when this one does not: sent with
   * the UNAVAILABLE refusal as trailing metadata so the agent dials it directly. An invalid address is
   * logged and not sent.
   */
  readonly leaderAddress?: () => string | undefined;
  /**
   * The controller's certificate: the tracker then speaks mutual TLS with agents of the trust bundle
   * only (others fail the handshake), and every session is bound to the agent's certificate: it must
   * register with the node name and an address its certificate names. Plaintext without (local development).
   */
  readonly tls?: IdentitySource;
  /**
   * Announce messages applied per second over all sessions (announce-gate.ts); past it the sending
   * session is paused and the agent waits. DEFAULT_ANNOUNCES_PER_SECOND when absent; 0: ungated.
   */
  readonly announcesPerSecond?: number;
  readonly announceBurst?: number;
}

interface StatusError {
  readonly code: status;
  readonly details: string;
  readonly metadata?: Metadata;
}

/** A refusal because this replica does not serve now; carries the leader's address when known. */
class NotServing extends TrackerError {
  constructor(
    reason: string,
    readonly leaderAddress: string | undefined,
  ) {
    super("ERR_TRACKER_UNAVAILABLE", leaderAddress === undefined ? reason : `${reason}; the leader serves at ${leaderAddress}`);
  }
}

/**
 * TrackerService over grpc-js in front of a MemoryTracker. Validates every input and maps TrackerError
 * to gRPC status (here and nowhere else). A session's stream ending, failing or being cancelled is the
 * agent's disconnect.
 */
export class TrackerServer {
  private readonly sessions = new Set<(details?: string, metadata?: Metadata) => void>();
  private closing: Promise<void> | undefined;
  private readonly gate: AnnounceGate;
  private registered = 0;

  private constructor(
    private readonly server: Server,
    private readonly options: TrackerServerOptions,
    readonly port: number,
    private readonly listener: TlsListener | undefined,
  ) {
    this.gate = new AnnounceGate({
      ...(options.announcesPerSecond === undefined ? {} : { perSecond: options.announcesPerSecond }),
      ...(options.announceBurst === undefined ? {} : { burst: options.announceBurst }),
    });
  }

  static async start(options: TrackerServerOptions): Promise<TrackerServer> {
    const server = new Server({
      "grpc.keepalive_time_ms": options.keepaliveTimeMs ?? SERVER_KEEPALIVE_TIME_MS,
      "grpc.keepalive_timeout_ms": options.keepaliveTimeoutMs ?? SERVER_KEEPALIVE_TIMEOUT_MS,
      "grpc.keepalive_permit_without_calls": 1,
      // Channelz (grpc-js's introspection, which nothing here reads) tracks every call: at thousands of
      // lookups a second that bookkeeping is measurable.
      "grpc.enable_channelz": 0,
      "grpc.max_receive_message_length": MAX_SESSION_MESSAGE_BYTES,
    });
    const host = options.host.includes(":") && !options.host.startsWith("[") ? `[${options.host}]` : options.host;
    let listener: TlsListener | undefined;
    let port: number;
    if (options.tls !== undefined) {
      // TLS is terminated by the shared listener (client certificates, refusal counts, rotation); the
      // decrypted connections go to grpc-js, whose calls still see the peer certificate (getAuthContext).
      const injector = server.createConnectionInjector(ServerCredentials.createInsecure());
      const metrics = options.metrics;
      try {
        listener = await TlsListener.start({
          host: options.host,
          port: options.port,
          identity: options.tls,
          clientCertificates: "require",
          authorize: (peer) => (peer.role === "agent" ? true : `only agents hold tracker sessions, not a ${peer.role}`),
          onConnection: (socket) => {
            injector.injectConnection(socket);
          },
          onRefused:
            metrics === undefined
              ? undefined
              : (reason) => {
                  metrics.identity.tlsHandshakesRefused.inc({ listener: "tracker", reason });
                },
          logger: options.logger,
          name: "tracker",
        });
      } catch (error: unknown) {
        throw new TrackerError(
          "ERR_TRACKER_UNAVAILABLE",
          `cannot listen on ${host}:${options.port}: ${error instanceof Error ? error.message : String(error)}`,
          { cause: error },
        );
      }
      port = listener.port;
    } else {
      port = await new Promise<number>((resolve, reject) => {
        server.bindAsync(`${host}:${options.port}`, ServerCredentials.createInsecure(), (error, bound) => {
          if (error === null) resolve(bound);
          else
            reject(
              new TrackerError("ERR_TRACKER_UNAVAILABLE", `cannot listen on ${host}:${options.port}: ${error.message}`, { cause: error }),
            );
        });
      });
    }
    const instance = new TrackerServer(server, options, port, listener);
    server.addService(TrackerServiceService, {
      session: (call: ServerDuplexStream<SessionRequest, SessionResponse>) => {
        instance.handleSession(call);
      },
      lookup: (call: ServerUnaryCall<LookupRequest, LookupResponse>, callback: sendUnaryData<LookupResponse>) => {
        instance.handleLookup(call, callback);
      },
      resolveTag: (call: ServerUnaryCall<ResolveTagRequest, ResolveTagResponse>, callback: sendUnaryData<ResolveTagResponse>) => {
        instance.handleResolveTag(call, callback);
      },
    });
    options.logger.info({ host: options.host, port, tls: listener !== undefined, trackerId: options.tracker.id }, "tracker listening");
    return instance;
  }

  /** Sessions registered and open now. */
  get sessionCount(): number {
    return this.registered;
  }

  /** `host:port` to dial, with the bound port. */
  get address(): string {
    const host =
      this.options.host === "0.0.0.0" || this.options.host === "" ? "127.0.0.1" : this.options.host === "::" ? "::1" : this.options.host;
    return host.includes(":") ? `[${host}]:${this.port}` : `${host}:${this.port}`;
  }

  /**
   * Ends every open session with UNAVAILABLE and `details` (agents reconnect); the server keeps listening.
   * With `leaderAddress` (valid IP:port) the refusal names the tracker agents should go to next.
   */
  endSessions(details: string, leaderAddress?: string): number {
    const parsed = leaderAddress === undefined ? undefined : parseLeaderAddress(leaderAddress);
    const metadata = parsed !== undefined && "address" in parsed ? leaderAddressMetadata(parsed.address) : undefined;
    const open = [...this.sessions];
    for (const end of open) end(details, metadata);
    return open.length;
  }

  /** Ends every session (agents see UNAVAILABLE and reconnect elsewhere), lets lookups finish, stops. */
  close(graceMs = DEFAULT_CLOSE_GRACE_MS): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.gate.close();
      for (const end of [...this.sessions]) end();
      // Stops accepting at once; the connections it handed over are grpc-js's to wind down.
      const listenerClosed = this.listener?.close(graceMs) ?? Promise.resolve();
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve(listenerClosed);
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve(listenerClosed);
      });
    }).then(() => {
      this.options.logger.info({ port: this.port }, "tracker stopped");
    });
    return this.closing;
  }

  private handleSession(call: ServerDuplexStream<SessionRequest, SessionResponse>): void {
    const { logger } = this.options;
    const remoteAddress = hostOfPeer(call.getPeer());
    let session: TrackerSession | undefined;
    let ended = false;
    /** Ends the call once: with OK (`undefined`), with an error status, or silently when it is already gone. */
    const end = (outcome: StatusError | "gone" | undefined): void => {
      if (ended) return;
      ended = true;
      this.sessions.delete(shutdown);
      if (session !== undefined) this.registered--;
      session?.close();
      if (outcome === "gone") return;
      if (outcome === undefined) call.end();
      else {
        logger.debug(
          { agentId: session?.identity.agentId, remoteAddress, code: status[outcome.code], details: outcome.details },
          "session ended",
        );
        call.emit("error", {
          code: outcome.code,
          details: outcome.details,
          ...(outcome.metadata === undefined ? {} : { metadata: outcome.metadata }),
        });
      }
    };
    const shutdown = (details = "tracker shutting down", metadata?: Metadata): void => {
      end({ code: status.UNAVAILABLE, details, ...(metadata === undefined ? {} : { metadata }) });
    };
    this.sessions.add(shutdown);
    const resume = (): void => {
      if (!ended) call.resume();
    };
    call.on("data", (request: SessionRequest) => {
      if (ended) return;
      try {
        session = this.onSessionMessage(call, session, request, remoteAddress, end);
      } catch (error: unknown) {
        end(this.toStatus(error));
        return;
      }
      // Over the announce rate: stop reading this session until the gate has room (flow control holds the agent).
      if (request.kind?.$case === "announce" && !this.gate.take(resume)) {
        this.options.metrics?.announcePauses.inc();
        call.pause();
      }
    });
    call.on("end", () => {
      end(undefined);
    });
    call.on("cancelled", () => {
      end("gone");
    });
    call.on("error", (error: unknown) => {
      if (!ended) logger.debug({ err: error, remoteAddress }, "session stream failed");
      end("gone");
    });
  }

  /** Applies one session message; returns the session (created by `register`). */
  private onSessionMessage(
    call: ServerDuplexStream<SessionRequest, SessionResponse>,
    session: TrackerSession | undefined,
    request: SessionRequest,
    remoteAddress: string | undefined,
    end: (outcome: StatusError) => void,
  ): TrackerSession | undefined {
    const kind = request.kind;
    if (session === undefined) {
      if (kind?.$case !== "register") throw this.rejected("the first message of a session must be register");
      this.checkServing();
      const identity = this.edge(() => validateIdentity(identityFromWire(kind.value)));
      const peer = this.verifiedPeer(call);
      if (peer !== undefined) this.bindToCertificate(identity, peer);
      const opened = this.options.tracker.register(identity, {
        ...(this.options.membership === undefined ? {} : { membership: this.options.membership }),
        ...(remoteAddress === undefined ? {} : { remoteAddress }),
        ...(peer === undefined ? {} : { peer, principal: identityUri(peer) }),
        resumeBlobs: kind.value.resumeBlobs,
        onClose: (reason) => {
          end({
            code: status.UNAVAILABLE,
            details: reason === "superseded" ? "a newer session of this agent replaced this one" : "session dropped by the tracker",
          });
        },
        // Commands are few and small (an assignment per ImagePrefetch); grpc-js buffers them if the agent reads slowly.
        onCommand: (command) => {
          call.write(commandResponse(command));
        },
        ...(kind.value.acceptsNotices ? { onNotice: noticeWriter(call) } : {}),
      });
      // The more agents hold sessions, the wider those coming back after a fail-over spread their re-announce.
      const reannounceSpreadMs = spreadForSessions(this.options.tracker.sessionCount);
      call.write({ kind: { $case: "registered", value: { trackerId: this.options.tracker.id, reannounceSpreadMs, sendsNotices: true } } });
      this.registered++;
      return opened;
    }
    switch (kind?.$case) {
      case "register":
        throw this.rejected("register sent twice in one session");
      case "announce": {
        // Malformed input ends the session (our client checks the same rules before sending); a conflict
        // with what other agents announced only refuses this one announcement.
        const announcement = this.edge(() => announcementFromWire(kind.value));
        this.edge(() => validateAnnouncement(announcement));
        try {
          session.announce(announcement);
        } catch (error: unknown) {
          if (!isTrackerError(error, "ERR_TRACKER_INVALID_ARGUMENT")) throw error;
          this.options.logger.warn({ agentId: session.identity.agentId, err: error }, "announce refused");
        }
        return session;
      }
      case "withdraw":
        session.withdraw(this.edge(() => validateDigest(kind.value.digest)));
        return session;
      case "heartbeat":
        session.heartbeat(kind.value.activeUploads);
        return session;
      case "tagSeen":
        session.publishTag(this.edge(() => validateTagRecord(tagRecordFromWire(kind.value))));
        return session;
      case "prefetchReport":
        session.prefetchReport(this.edge(() => validatePrefetchReport(prefetchReportFromWire(kind.value))));
        return session;
      case undefined:
        // A message kind from a newer agent: ignored so that agents can be upgraded before the tracker.
        return session;
    }
  }

  private handleLookup(call: ServerUnaryCall<LookupRequest, LookupResponse>, callback: sendUnaryData<LookupResponse>): void {
    try {
      this.checkServing();
      const agentId = this.edge(() => validateAgentId(call.request.agentId));
      const digest = this.edge(() => validateDigest(call.request.digest));
      const remoteAddress = hostOfPeer(call.getPeer());
      const excluded = this.edge(() => {
        if (call.request.excludedAgentIds.length > MAX_EXCLUDED_AGENTS)
          throw new TrackerError("ERR_TRACKER_INVALID_ARGUMENT", `more than ${MAX_EXCLUDED_AGENTS} excluded agents`);
        return call.request.excludedAgentIds.map(validateAgentId);
      });
      const expectedSize = this.edge(() => {
        const size = call.request.expectedSize;
        if (!Number.isSafeInteger(size) || size < 0)
          throw new TrackerError("ERR_TRACKER_INVALID_ARGUMENT", `expected size ${size} is not a byte count`);
        return size === 0 ? undefined : size;
      });
      const peer = this.verifiedPeer(call);
      const result = this.options.tracker.lookup(
        agentId,
        digest,
        call.request.wantOriginGrant,
        {
          ...(this.options.membership === undefined ? {} : { membership: this.options.membership }),
          ...(remoteAddress === undefined ? {} : { remoteAddress }),
          ...(peer === undefined ? {} : { peer, principal: identityUri(peer) }),
        },
        excluded,
        expectedSize,
      );
      callback(null, lookupResponse(result));
    } catch (error: unknown) {
      callback(this.toStatus(error));
    }
  }

  private handleResolveTag(
    call: ServerUnaryCall<ResolveTagRequest, ResolveTagResponse>,
    callback: sendUnaryData<ResolveTagResponse>,
  ): void {
    try {
      this.checkServing();
      const agentId = this.edge(() => validateAgentId(call.request.agentId));
      const key = this.edge(() => validateTagKey(call.request));
      const remoteAddress = hostOfPeer(call.getPeer());
      const peer = this.verifiedPeer(call);
      const record = this.options.tracker.resolveTag(agentId, key, {
        ...(this.options.membership === undefined ? {} : { membership: this.options.membership }),
        ...(remoteAddress === undefined ? {} : { remoteAddress }),
        ...(peer === undefined ? {} : { peer, principal: identityUri(peer) }),
      });
      callback(null, record === undefined ? {} : { record: tagRecordToWire(record) });
    } catch (error: unknown) {
      callback(this.toStatus(error));
    }
  }

  /**
   * The agent's identity from its TLS certificate (already verified by the listener); undefined on a
   * plaintext tracker. A TLS tracker without one is a bug, refused rather than served anonymously.
   */
  private verifiedPeer(call: { getAuthContext(): { sslPeerCertificate?: { raw: Buffer } } }): WorkloadIdentity | undefined {
    if (this.listener === undefined) return undefined;
    const raw = call.getAuthContext().sslPeerCertificate?.raw;
    const peer = raw === undefined ? undefined : identityOfCertificate(new X509Certificate(raw));
    if (peer === undefined) throw new TrackerError("ERR_TRACKER_PERMISSION_DENIED", "no verified agent certificate on this connection");
    return peer;
  }

  /**
   * A session says who it is (node name, peer address); with TLS that must be what the certificate
   * says: its node name, and a peer address on one of its IP addresses, so other agents are never sent
   * to an address the agent does not own.
   */
  private bindToCertificate(identity: AgentIdentity, peer: WorkloadIdentity): void {
    const host = hostOfAddress(identity.peerAddress);
    const refusal =
      identity.nodeName !== peer.name
        ? `registers as node ${JSON.stringify(identity.nodeName)} but its certificate is for ${describeIdentity(peer)}`
        : !identityHasAddress(peer, host)
          ? `advertises peer address ${identity.peerAddress} but its certificate (${describeIdentity(peer)}) names ${peer.ips.join(", ") || "no address"}`
          : undefined;
    if (refusal === undefined) return;
    this.options.metrics?.sessionsRefused.inc();
    this.options.logger.warn(
      {
        agentId: identity.agentId,
        nodeName: identity.nodeName,
        peerAddress: identity.peerAddress,
        certificate: identityUri(peer),
        reason: refusal,
      },
      "session refused",
    );
    throw new TrackerError("ERR_TRACKER_PERMISSION_DENIED", `agent ${identity.agentId} ${refusal}`);
  }

  /** Throws ERR_TRACKER_UNAVAILABLE (gRPC UNAVAILABLE, with the leader's address when known) while the `serving` option says no. */
  private checkServing(): void {
    const serving = this.options.serving?.() ?? true;
    if (serving === true) return;
    const advertised = this.options.leaderAddress?.();
    const parsed = advertised === undefined ? undefined : parseLeaderAddress(advertised);
    if (parsed !== undefined && "invalid" in parsed)
      this.options.logger.warn({ reason: parsed.invalid }, "not redirecting agents to the leader");
    const leader = parsed !== undefined && "address" in parsed ? parsed.address : undefined;
    if (leader !== undefined) this.options.metrics?.redirects.inc();
    throw new NotServing(serving, leader);
  }

  /** Runs a check at the edge, counting what it rejects. */
  private edge<T>(check: () => T): T {
    try {
      return check();
    } catch (error) {
      this.options.metrics?.requestsRejected.inc({ reason: "invalid" });
      throw error;
    }
  }

  private rejected(message: string): TrackerError {
    this.options.metrics?.requestsRejected.inc({ reason: "invalid" });
    return new TrackerError("ERR_TRACKER_INVALID_ARGUMENT", message);
  }

  /** TrackerError → gRPC status; anything else is a bug here, logged and reported as INTERNAL. */
  private toStatus(error: unknown): StatusError {
    if (isTrackerError(error)) {
      const code = {
        ERR_TRACKER_INVALID_ARGUMENT: status.INVALID_ARGUMENT,
        ERR_TRACKER_NOT_REGISTERED: status.FAILED_PRECONDITION,
        ERR_TRACKER_PERMISSION_DENIED: status.PERMISSION_DENIED,
        ERR_TRACKER_UNAVAILABLE: status.UNAVAILABLE,
        ERR_TRACKER_CLOSED: status.UNAVAILABLE,
        ERR_TRACKER_RESOURCE_EXHAUSTED: status.RESOURCE_EXHAUSTED,
      }[error.code];
      if (error instanceof NotServing && error.leaderAddress !== undefined)
        return { code, details: error.message, metadata: leaderAddressMetadata(error.leaderAddress) };
      return { code, details: error.message };
    }
    this.options.logger.error({ err: error }, "tracker request failed");
    return { code: status.INTERNAL, details: "internal tracker error" };
  }
}

/** The host of `host:port` (`[v6]:port` too), without brackets. */
function hostOfAddress(address: string): string {
  const match = /^\[([^\]]+)\]:\d+$/.exec(address) ?? /^([^:]+):\d+$/.exec(address);
  return match?.[1] ?? address;
}
