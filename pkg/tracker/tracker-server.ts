import { Server, ServerCredentials, type ServerDuplexStream, type ServerUnaryCall, type sendUnaryData } from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type IdentitySource, TlsListener } from "../identity/index.js";
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
import { TrackerError } from "./errors.js";
import { leaderAddressMetadata, parseLeaderAddress } from "./leader-redirect.js";
import { LookupHandlers } from "./lookup-handlers.js";
import type { Membership } from "./membership.js";
import type { MemoryTracker } from "./memory-tracker.js";
import { ServerEdge } from "./server-edge.js";
import { ServerSessions } from "./server-sessions.js";
import { MAX_SESSION_MESSAGE_BYTES } from "./wire.js";

/** The server pings an idle connection this often, so a dead agent's session ends within ~15 s. */
export const SERVER_KEEPALIVE_TIME_MS = 10_000;
export const SERVER_KEEPALIVE_TIMEOUT_MS = 5_000;
/** On close, how long lookups in flight may finish before the server is cut. */
const DEFAULT_CLOSE_GRACE_MS = 1_000;

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

/**
 * TrackerService over grpc-js in front of a MemoryTracker: listens (plaintext, or mutual TLS through the
 * shared TlsListener), hands Session streams to ServerSessions (server-sessions.ts) and Lookup and
 * ResolveTag to LookupHandlers (lookup-handlers.ts); both check every input and map TrackerError to gRPC
 * status at the edge (server-edge.ts), and nowhere else. A session's stream ending, failing or being
 * cancelled is the agent's disconnect.
 */
export class TrackerServer {
  private closing: Promise<void> | undefined;
  private readonly gate: AnnounceGate;
  private readonly sessions: ServerSessions;
  private readonly lookups: LookupHandlers;

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
    const edge = new ServerEdge(options);
    const tls = listener !== undefined;
    this.sessions = new ServerSessions({
      tracker: options.tracker,
      membership: options.membership,
      metrics: options.metrics,
      logger: options.logger,
      gate: this.gate,
      edge,
      tls,
    });
    this.lookups = new LookupHandlers({ tracker: options.tracker, membership: options.membership, edge, tls });
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
        instance.sessions.handle(call);
      },
      lookup: (call: ServerUnaryCall<LookupRequest, LookupResponse>, callback: sendUnaryData<LookupResponse>) => {
        instance.lookups.lookup(call, callback);
      },
      resolveTag: (call: ServerUnaryCall<ResolveTagRequest, ResolveTagResponse>, callback: sendUnaryData<ResolveTagResponse>) => {
        instance.lookups.resolveTag(call, callback);
      },
    });
    options.logger.info({ host: options.host, port, tls: listener !== undefined, trackerId: options.tracker.id }, "tracker listening");
    return instance;
  }

  /** Sessions registered and open now. */
  get sessionCount(): number {
    return this.sessions.count;
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
    return this.sessions.endAll(details, metadata);
  }

  /** Ends every session (agents see UNAVAILABLE and reconnect elsewhere), lets lookups finish, stops. */
  close(graceMs = DEFAULT_CLOSE_GRACE_MS): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.gate.close();
      this.sessions.endAll();
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
}
