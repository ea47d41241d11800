import {
  constants as h2,
  createServer,
  type Http2Server,
  type Http2Session,
  type IncomingHttpHeaders,
  type ServerHttp2Stream,
} from "node:http2";
import type { Logger } from "pino";
import { type IdentitySource, TlsListener } from "../identity/index.js";
import { ReadPiecesRequest, StatRequest, StatResponse } from "../gen/peer/v1/peer.js";
import type { AgentMetrics } from "../metrics/index.js";
import { type Digest, parseDigest } from "../oci/index.js";
import type { BlobStore } from "../store/index.js";
import { TokenBucket } from "../throttle/index.js";
import { failureStatus, PeerStatus } from "./grpc-status.js";
import { GrpcStatus, frameMessage, isGrpcContentType } from "./grpc-wire.js";
import { PEER_METHODS } from "./peer-service.js";
import type { KnownPeer } from "./known-peers.js";
import { checkPieces, findHeldBlob, type HeldBlob, readBytes } from "./piece-reader.js";
import { ExchangeStream, type ExchangeHost } from "./exchange-server.js";
import { messagePool, PieceWriter } from "./piece-writer.js";
import { statResponse } from "./peer-stat.js";
import { endCall, MAX_REQUEST_BYTES, readRequest, respondHttp, respondMessages } from "./server-call.js";
import { DEFAULT_MAX_CONCURRENT_UPLOADS, type SlotRelease, UploadSlots } from "./upload-slots.js";

/** Longest wait_ms honoured; longer requests are clamped to it. */
export const MAX_WAIT_MS = 60_000;
/** Calls one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). */
export const MAX_STREAMS_PER_CONNECTION = 32;
/** A connection without any call for this long is closed. */
const IDLE_SESSION_MS = 120_000;
/** How close() lets connections wind down before cutting them. */
const DEFAULT_CLOSE_GRACE_MS = 2_000;

export interface PeerServerOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  readonly store: BlobStore;
  /** Node-wide upload cap shared by all streams; 0 or undefined = uncapped. */
  readonly uploadBytesPerSecond?: number | undefined;
  /** ReadPieces streams served at once; more are refused with RESOURCE_EXHAUSTED. */
  readonly maxConcurrentUploads?: number | undefined;
  /** A ReadPieces call whose client reads nothing for this long is cut, freeing its upload slot. */
  readonly sendStallTimeoutMs?: number | undefined;
  readonly metrics?: AgentMetrics | undefined;
  readonly logger: Logger;
  readonly closeGraceMs?: number | undefined;
  /** Other agents known to hold a blob, told to whoever asks Stat about it (peer exchange). */
  readonly knownHolders?: ((digest: Digest) => readonly KnownPeer[]) | undefined;
  /**
   * This agent's certificate: the port then speaks mutual TLS and serves only clients presenting an
   * agent certificate of the trust bundle (others fail the handshake). Plain HTTP/2 without (local development).
   */
  readonly tls?: IdentitySource | undefined;
  /** Serve the Exchange stream (default true); false answers it UNIMPLEMENTED, as agents before it did. */
  readonly exchange?: boolean | undefined;
}

/**
 * Serves PeerService (peer.proto) on node:http2 with gRPC framing (grpc-wire.ts): Stat, and pieces of
 * complete and partial blobs read from the store straight into reused message buffers.
 */
export class PeerServer {
  private readonly logger: Logger;
  private readonly bucket: TokenBucket | undefined;
  private readonly slots: UploadSlots;
  /** One controller per call in progress, so close() can stop them. */
  private readonly calls = new Set<AbortController>();
  private readonly handlers = new Set<Promise<void>>();
  private readonly sessions = new Set<Http2Session>();
  private readonly pool = messagePool();
  private readonly exchange: boolean;
  private exchangeStreams = 0;
  /** What Exchange streams use of this server. */
  private readonly exchangeHost: ExchangeHost;
  private closing: Promise<void> | undefined;
  private boundAddress = "";
  /** Accepts mutual-TLS connections when the server has an identity. */
  private listener: TlsListener | undefined;

  private constructor(
    private readonly server: Http2Server,
    private readonly options: PeerServerOptions,
  ) {
    this.logger = options.logger.child({ component: "peer-server" });
    const rate = options.uploadBytesPerSecond ?? 0;
    this.bucket = rate > 0 ? new TokenBucket(rate) : undefined;
    this.slots = new UploadSlots(options.maxConcurrentUploads ?? DEFAULT_MAX_CONCURRENT_UPLOADS, options.metrics);
    this.exchange = options.exchange ?? true;
    this.exchangeHost = {
      store: options.store,
      describe: (rawDigest) => this.describe(rawDigest),
      acquireUploadSlot: (session, bytes) => this.slots.acquire(session, bytes),
      writer: (stream, signal, requestId, small) => this.writer(stream, signal, requestId, small),
      clampWaitMs: (waitMs) => Math.min(waitMs, MAX_WAIT_MS),
      maxRequestBytes: MAX_REQUEST_BYTES,
      logFailure: (method, peerStatus) => {
        this.logFailure(method, peerStatus);
      },
      onRefused: () => {
        this.options.metrics?.peerUploadsRejected.inc();
      },
    };
  }

  static async start(options: PeerServerOptions): Promise<PeerServer> {
    const server = createServer({ settings: { maxConcurrentStreams: MAX_STREAMS_PER_CONNECTION, enablePush: false } });
    const peer = new PeerServer(server, options);
    server.on("session", (session) => {
      peer.track(session);
    });
    server.on("stream", (stream, headers) => {
      peer.dispatch(stream, headers);
    });
    const host = formatHost(options.host);
    let port: number;
    if (options.tls !== undefined) {
      const { metrics } = options;
      peer.listener = await TlsListener.start({
        host: options.host,
        port: options.port,
        identity: options.tls,
        clientCertificates: "require",
        authorize: (client) => (client.role === "agent" ? true : `only agents fetch pieces, not a ${client.role}`),
        onConnection: (socket) => server.emit("connection", socket),
        onRefused:
          metrics === undefined
            ? undefined
            : (reason) => {
                metrics.identity.tlsHandshakesRefused.inc({ listener: "peer", reason });
              },
        logger: peer.logger,
        name: "peer",
      });
      port = peer.listener.port;
    } else {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(options.port, options.host, () => {
          server.off("error", reject);
          resolve();
        });
      });
      const address = server.address();
      port = typeof address === "object" && address !== null ? address.port : options.port;
    }
    server.on("error", (error) => {
      peer.logger.error({ err: error }, "peer server error");
    });
    peer.boundAddress = `${host}:${port}`;
    peer.logger.info(
      {
        address: peer.boundAddress,
        tls: options.tls !== undefined,
        uploadBytesPerSecond: options.uploadBytesPerSecond ?? 0,
        maxConcurrentUploads: peer.slots.max,
      },
      "peer server listening",
    );
    return peer;
  }

  /** host:port actually bound. */
  get address(): string {
    return this.boundAddress;
  }

  /** ReadPieces calls and Exchange reads being served now (reported to the tracker as this agent's load). */
  get activeUploads(): number {
    return this.slots.inUse;
  }

  /** Calls being served now, of every method, an Exchange stream counting as one (tests). */
  get openCalls(): number {
    return this.calls.size;
  }

  /** Exchange streams open now (tests, benchmarks). */
  get openExchangeStreams(): number {
    return this.exchangeStreams;
  }

  /** Bytes of message buffers being filled or waiting for the connection to take them (tests: boundedness). */
  get messageBytesInUse(): number {
    return this.pool.lentBytes;
  }

  /**
   * Stops serving: calls in progress end with UNAVAILABLE (their clients go to another peer), then the
   * connections close, forcibly after a grace period. Resolves when no handler touches the store any more.
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    for (const call of this.calls) call.abort(new PeerStatus(GrpcStatus.UNAVAILABLE, "peer is shutting down"));
    const graceMs = this.options.closeGraceMs ?? DEFAULT_CLOSE_GRACE_MS;
    const closed = Promise.all([
      new Promise<void>((resolve) => {
        this.server.close(() => {
          resolve();
        });
      }),
      this.listener?.close(graceMs),
    ]);
    for (const session of this.sessions) session.close();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
    for (const session of this.sessions) session.destroy();
    await Promise.all(this.handlers);
    this.logger.info("peer server closed");
  }

  private track(session: Http2Session): void {
    this.sessions.add(session);
    session.setTimeout(IDLE_SESSION_MS, () => {
      session.close();
    });
    session.on("error", (error) => {
      this.logger.debug({ err: error }, "peer connection failed");
    });
    session.once("close", () => this.sessions.delete(session));
    if (this.closing !== undefined) session.close();
  }

  private dispatch(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    stream.on("error", (error) => {
      this.logger.debug({ err: error }, "peer call stream failed");
    });
    if (headers[h2.HTTP2_HEADER_METHOD] !== "POST") {
      respondHttp(stream, 405);
      return;
    }
    if (!isGrpcContentType(headers[h2.HTTP2_HEADER_CONTENT_TYPE])) {
      respondHttp(stream, 415);
      return;
    }
    const path = headers[h2.HTTP2_HEADER_PATH];
    const method =
      path === PEER_METHODS.stat
        ? "stat"
        : path === PEER_METHODS.readPieces
          ? "readPieces"
          : path === PEER_METHODS.exchange && this.exchange
            ? "exchange"
            : undefined;
    if (method === undefined) {
      endCall(stream, new PeerStatus(GrpcStatus.UNIMPLEMENTED, `unknown method ${String(path)}`));
      return;
    }
    const handler = this.serve(stream, method).finally(() => {
      this.handlers.delete(handler);
    });
    this.handlers.add(handler);
  }

  /** Never rejects: every failure becomes the call's status. */
  private async serve(stream: ServerHttp2Stream, method: "stat" | "readPieces" | "exchange"): Promise<void> {
    const controller = new AbortController();
    const onGone = (): void => {
      controller.abort(new PeerStatus(GrpcStatus.CANCELLED, "cancelled by the client"));
    };
    stream.once("close", onGone);
    this.calls.add(controller);
    if (this.closing !== undefined) controller.abort(new PeerStatus(GrpcStatus.UNAVAILABLE, "peer is shutting down"));
    /** The connection the slot is counted against (the stream forgets its session once closed). */
    const session = stream.session;
    // Released before the response's trailers go out (readPieces calls it), not after the file is closed: the
    // client starts its next call as soon as it has them, and must not find this one still counted.
    let releaseSlot = (): void => undefined;
    try {
      if (method === "exchange") {
        this.exchangeStreams++;
        try {
          await new ExchangeStream(stream, this.exchangeHost, controller.signal).serve();
        } finally {
          this.exchangeStreams--;
        }
        return;
      }
      const body = await readRequest(stream, controller.signal);
      if (method === "stat") {
        const response = await this.stat(StatRequest.decode(body));
        respondMessages(stream, [frameMessage(StatResponse.encode(response).finish())]);
        return;
      }
      const request = ReadPiecesRequest.decode(body);
      const { digest, blob } = await this.describe(request.digest);
      checkPieces(request, blob);
      controller.signal.throwIfAborted();
      const slot = this.slots.acquire(session, readBytes(request, blob));
      releaseSlot = slot;
      await this.readPieces(stream, digest, blob, request, slot, controller.signal);
    } catch (error: unknown) {
      const peerStatus = failureStatus(error, controller.signal);
      if (peerStatus.code !== GrpcStatus.CANCELLED) {
        this.logFailure(method, peerStatus);
        endCall(stream, peerStatus);
      }
    } finally {
      stream.off("close", onGone);
      this.calls.delete(controller);
      releaseSlot();
    }
  }

  /** `small`: the read was served from the small-read pool, and pays the upload rate ahead of the queue. */
  private writer(stream: ServerHttp2Stream, signal: AbortSignal, requestId: number | undefined, small: boolean): PieceWriter {
    const { metrics } = this.options;
    return new PieceWriter({
      stream,
      signal,
      pool: this.pool,
      bucket: this.bucket,
      small,
      sendStallTimeoutMs: this.options.sendStallTimeoutMs,
      requestId,
      onSent:
        metrics === undefined
          ? undefined
          : (bytes) => {
              metrics.peerBytesSent.inc(bytes);
            },
    });
  }

  private async stat(request: StatRequest): Promise<StatResponse> {
    const { digest, blob } = await this.describe(request.digest);
    return statResponse(this.options.store, digest, blob, () => this.options.knownHolders?.(digest) ?? []);
  }

  private async readPieces(
    stream: ServerHttp2Stream,
    digest: Digest,
    blob: HeldBlob,
    request: ReadPiecesRequest,
    /** The upload slot; freed before the trailers are sent. */
    releaseSlot: SlotRelease,
    signal: AbortSignal,
  ): Promise<void> {
    const { store } = this.options;
    const writer = this.writer(stream, signal, undefined, releaseSlot.small);
    try {
      await writer.sendPieces(store, digest, blob, request.pieces, Math.min(request.waitMs, MAX_WAIT_MS), () => {
        releaseSlot();
        writer.finish();
      });
    } finally {
      writer.dispose();
    }
  }

  private async describe(rawDigest: string): Promise<{ digest: Digest; blob: HeldBlob }> {
    const digest = parseDigest(rawDigest);
    const blob = await findHeldBlob(this.options.store, digest);
    if (blob === undefined) throw new PeerStatus(GrpcStatus.NOT_FOUND, `blob ${digest} is not held here`);
    return { digest, blob };
  }

  private logFailure(method: string, peerStatus: PeerStatus): void {
    // Calls this server ends because it is closing are expected (their clients go to other peers): one
    // debug line each, not a warning per open stream at every agent restart.
    const serious = peerStatus.code === GrpcStatus.INTERNAL || peerStatus.code === GrpcStatus.UNAVAILABLE;
    const level = serious && this.closing === undefined ? "warn" : "debug";
    this.logger[level](
      { method, code: GrpcStatus[peerStatus.code], details: peerStatus.details, err: peerStatus.cause },
      "peer call failed",
    );
  }
}

/** IPv6 literals need brackets in host:port. */
function formatHost(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}
