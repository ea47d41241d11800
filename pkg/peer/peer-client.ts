import type { Logger } from "pino";
import { ReadPiecesRequest, StatRequest, StatResponse } from "../gen/peer/v1/peer.js";
import { type IdentitySource, clientTlsOptions } from "../identity/index.js";
import type { AgentMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import { PeerError } from "./errors.js";
import { fromGrpcStatus } from "./grpc-status.js";
import { GrpcStatus, MessageCollector, MessageFramer } from "./grpc-wire.js";
import { MAX_MESSAGE_BYTES, PEER_METHODS } from "./peer-service.js";
import { BufferPool } from "./buffer-pool.js";
import { type ActiveCall, type CallOutcome, type EndReason, startCall } from "./client-call.js";
import { checkStat, MAX_STAT_RESPONSE_BYTES } from "./peer-stat.js";
import { readBytes } from "./piece-reader.js";
import { PieceReceiver } from "./piece-receiver.js";
import type { PeerBlobStat, PieceReadRequest, PieceSource, ReceivedPiece } from "./piece-source.js";
import { SessionPool } from "./session-pool.js";
import { ExchangeUnsupported } from "./exchange-channel.js";
import { ExchangeChannels } from "./exchange-channels.js";
import { SMALL_READ_BYTES } from "./upload-slots.js";
import { ChunkDecoder } from "./wire-codec.js";

/** Receive window per call: a peer streams up to this far ahead of what we consumed (~1 GB/s on loopback). */
export const STREAM_WINDOW_BYTES = 8 * 1024 * 1024;
/** Receive window of a whole connection (the calls to one peer together). */
export const CONNECTION_WINDOW_BYTES = 16 * 1024 * 1024;
export const DEFAULT_STALL_TIMEOUT_MS = 10_000;
export const DEFAULT_IDLE_SESSION_CLOSE_MS = 60_000;
export const DEFAULT_STAT_TIMEOUT_MS = 5_000;
export const DEFAULT_EXCHANGE = true;
/** Whole pieces a call may hold ready for a consumer that is still busy before it stops reading the connection. */
const MAX_READY_PIECES = 2;
/** Idle piece buffers kept for reuse (four 1 MiB pieces; larger pieces are allocated each time). */
const MAX_IDLE_PIECE_BYTES = 4 * 1024 * 1024;

export interface PeerClientOptions {
  readonly logger: Logger;
  readonly metrics?: AgentMetrics | undefined;
  /**
   * A call that receives nothing for this long (plus the request's waitMs, for which the peer may
   * legitimately be silent) is cancelled with ERR_PEER_TIMEOUT. Time the consumer spends on a piece
   * does not count.
   */
  readonly stallTimeoutMs?: number | undefined;
  readonly idleSessionCloseMs?: number | undefined;
  readonly statTimeoutMs?: number | undefined;
  /** For benchmarks; defaults to STREAM_WINDOW_BYTES. */
  readonly streamWindowBytes?: number | undefined;
  /**
   * This agent's certificate: peers are reached over mutual TLS and must present an agent certificate
   * naming the address dialed. Plain HTTP/2 without (local development).
   */
  readonly tls?: IdentitySource | undefined;
  /**
   * Read pieces over one Exchange stream per peer (default DEFAULT_EXCHANGE) rather than a ReadPieces call
   * per request. Peers that do not serve Exchange are read with ReadPieces either way.
   */
  readonly exchange?: boolean | undefined;
}

/**
 * Reads pieces from other agents over gRPC (PeerService), on node:http2 with the framing of grpc-wire.ts.
 * Pieces arrive into pooled buffers and are hashed as they arrive; verifying them against the expected
 * hashes is the scheduler's job.
 */
export class PeerClient implements PieceSource {
  private readonly pool: SessionPool;
  private readonly buffers = new BufferPool({ maxIdleBytes: MAX_IDLE_PIECE_BYTES });
  private readonly stallTimeoutMs: number;
  private readonly statTimeoutMs: number;
  /** Cancels every call in progress; used by close(). */
  private readonly cancellers = new Set<(reason: EndReason) => void>();
  private readonly unsubscribe: (() => void) | undefined;
  private closed = false;
  /** The Exchange stream per peer; undefined when this client reads with calls only. */
  private readonly channels: ExchangeChannels | undefined;

  constructor(private readonly options: PeerClientOptions) {
    const identity = options.tls;
    const streamWindowBytes = options.streamWindowBytes ?? STREAM_WINDOW_BYTES;
    this.pool = new SessionPool({
      streamWindowBytes,
      connectionWindowBytes: Math.max(CONNECTION_WINDOW_BYTES, streamWindowBytes),
      idleCloseMs: options.idleSessionCloseMs ?? DEFAULT_IDLE_SESSION_CLOSE_MS,
      connectOptions:
        identity === undefined
          ? undefined
          : () => {
              const material = identity.current();
              if (material === undefined)
                throw new PeerError("ERR_PEER_UNAVAILABLE", "this agent holds no certificate yet: peers cannot be reached");
              return clientTlsOptions(material, { role: "agent" });
            },
    });
    // Connections made after a rotation present the new certificate; calls on older ones finish there.
    this.unsubscribe = identity?.subscribe(() => {
      this.pool.retire();
      this.channels?.retire();
    });
    this.stallTimeoutMs = options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
    this.statTimeoutMs = options.statTimeoutMs ?? DEFAULT_STAT_TIMEOUT_MS;
    if (options.exchange ?? DEFAULT_EXCHANGE) {
      this.channels = new ExchangeChannels({
        pool: this.pool,
        idleCloseMs: options.idleSessionCloseMs ?? DEFAULT_IDLE_SESSION_CLOSE_MS,
        receiver: (request, peerAddress) => this.receiver(request, peerAddress),
        onWasted: (bytes) => {
          options.metrics?.peerBytesWasted.inc({ reason: "incomplete" }, bytes);
        },
        logger: options.logger.child({ component: "peer-client" }),
      });
    }
  }

  /** Connections open now (one per peer recently talked to). */
  get openSessions(): number {
    return this.pool.size;
  }

  /**
   * Over the pair's Exchange stream when this client and the peer speak it, else as a ReadPieces call; the
   * same semantics either way. A small read (PieceReadRequest.blobSize) is always a call of its own: on the
   * shared stream it would queue behind the other reads' pieces (head-of-line), while HTTP/2 interleaves
   * the frames of separate streams.
   */
  async *readPieces(
    peerAddress: string,
    request: PieceReadRequest,
    signal: AbortSignal,
    onData?: (bytes: number) => void,
  ): AsyncGenerator<ReceivedPiece, void, undefined> {
    this.checkUsable(signal);
    const small =
      request.blobSize !== undefined && readBytes(request, { size: request.blobSize, pieceSize: request.pieceSize }) <= SMALL_READ_BYTES;
    if (!small && this.channels?.speaksExchange(peerAddress) === true) {
      try {
        yield* this.channels.read(peerAddress, request, signal, this.stallTimeoutMs, onData);
        return;
      } catch (error: unknown) {
        // Thrown before any piece: the read is made again as a call (and the next ones for a while).
        if (!(error instanceof ExchangeUnsupported)) throw error;
      }
    }
    yield* this.readPiecesCall(peerAddress, request, signal, onData);
  }

  /** Exchange streams open now, one per peer (tests). */
  get openStreams(): number {
    return this.channels?.size ?? 0;
  }

  private receiver(request: PieceReadRequest, peerAddress: string): PieceReceiver {
    const received = this.options.metrics?.peerBytesReceived;
    return new PieceReceiver(
      request.pieces,
      request.pieceSize,
      this.buffers,
      peerAddress,
      received === undefined
        ? undefined
        : (bytes) => {
            received.inc(bytes);
          },
    );
  }

  /** One ReadPieces call. */
  private async *readPiecesCall(
    peerAddress: string,
    request: PieceReadRequest,
    signal: AbortSignal,
    onData?: (bytes: number) => void,
  ): AsyncGenerator<ReceivedPiece, void, undefined> {
    const body = ReadPiecesRequest.encode({
      digest: request.digest,
      pieceSize: request.pieceSize,
      pieces: [...request.pieces],
      waitMs: request.waitMs,
    }).finish();
    const receiver = this.receiver(request, peerAddress);
    const framer = new MessageFramer(MAX_MESSAGE_BYTES, new ChunkDecoder(receiver));
    // The peer may be silent while it waits up to waitMs for a piece it is still receiving.
    const stallMs = this.stallTimeoutMs + request.waitMs;
    const call = this.start(peerAddress, PEER_METHODS.readPieces, body, signal, stallMs, (chunk) => {
      framer.push(chunk);
      onData?.(chunk.byteLength);
      return receiver.pending >= MAX_READY_PIECES;
    });
    try {
      for (;;) {
        // Pieces still in the receiver when the consumer stops early are released by dispose().
        for (let piece = receiver.shift(); piece !== undefined; piece = receiver.shift()) {
          call.consuming(true);
          yield piece;
        }
        call.consuming(false);
        const outcome = await call.next();
        if (outcome === undefined) continue;
        if (outcome.failure !== undefined) throw outcome.failure;
        if (outcome.code !== GrpcStatus.OK) throw fromGrpcStatus(outcome.code ?? GrpcStatus.UNKNOWN, outcome.details, peerAddress);
        if (!framer.idle) throw new PeerError("ERR_PEER_PROTOCOL", `peer ${peerAddress} ended the stream inside a message`);
        receiver.end();
        for (let piece = receiver.shift(); piece !== undefined; piece = receiver.shift()) yield piece;
        return;
      }
    } finally {
      call.finish();
      if (receiver.undeliveredBytes > 0) this.options.metrics?.peerBytesWasted.inc({ reason: "incomplete" }, receiver.undeliveredBytes);
      receiver.dispose();
    }
  }

  /** What `peerAddress` holds of `digest`; undefined when it holds nothing of it. */
  async stat(peerAddress: string, digest: Digest, signal: AbortSignal): Promise<PeerBlobStat | undefined> {
    this.checkUsable(signal);
    const collector = new MessageCollector();
    const framer = new MessageFramer(MAX_STAT_RESPONSE_BYTES, collector);
    const call = this.start(
      peerAddress,
      PEER_METHODS.stat,
      StatRequest.encode({ digest }).finish(),
      signal,
      this.statTimeoutMs,
      (chunk) => {
        framer.push(chunk);
        return false;
      },
    );
    try {
      let outcome: CallOutcome | undefined;
      while (outcome === undefined) outcome = await call.next();
      if (outcome.failure !== undefined) throw outcome.failure;
      if (outcome.code === GrpcStatus.NOT_FOUND) return undefined;
      if (outcome.code !== GrpcStatus.OK) throw fromGrpcStatus(outcome.code ?? GrpcStatus.UNKNOWN, outcome.details, peerAddress);
      const [message, ...extra] = collector.messages;
      if (message === undefined || extra.length > 0 || !framer.idle) {
        throw new PeerError("ERR_PEER_PROTOCOL", `peer ${peerAddress} sent ${collector.messages.length} Stat responses, not one`);
      }
      let response: StatResponse;
      try {
        response = StatResponse.decode(message);
      } catch (error: unknown) {
        throw new PeerError("ERR_PEER_PROTOCOL", `peer ${peerAddress} sent an undecodable Stat response`, { cause: error });
      }
      return checkStat(response, peerAddress);
    } finally {
      call.finish();
    }
  }

  /** Cancels calls in progress (they fail with ERR_PEER_ABORTED) and closes every connection. */
  close(): void {
    this.closed = true;
    this.unsubscribe?.();
    for (const cancel of [...this.cancellers]) cancel("closed");
    this.channels?.destroy(new PeerError("ERR_PEER_ABORTED", "peer client closed"));
    this.pool.close();
  }

  /** Starts a call to `peerAddress` on its pooled connection (see startCall). */
  private start(
    peerAddress: string,
    path: string,
    body: Uint8Array,
    signal: AbortSignal,
    stallMs: number,
    onData: (chunk: Buffer) => boolean,
  ): ActiveCall {
    const lease = this.pool.acquire(peerAddress);
    return startCall({ lease, peerAddress, path, body, signal, stallMs, onData, cancellers: this.cancellers });
  }

  private checkUsable(signal: AbortSignal): void {
    if (signal.aborted) throw new PeerError("ERR_PEER_ABORTED", "aborted before the call started", { cause: signal.reason });
    if (this.closed) throw new PeerError("ERR_PEER_ABORTED", "peer client is closed");
  }
}
