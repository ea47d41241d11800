import { type ClientHttp2Stream, constants as h2, type IncomingHttpHeaders } from "node:http2";
import type { Logger } from "pino";
import { ReadPiecesRequest, StatRequest, StatResponse } from "../gen/peer/v1/peer.js";
import { type IdentitySource, clientTlsOptions } from "../identity/index.js";
import type { AgentMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import { PIECE_HASH_BYTES, pieceCount } from "../piece/index.js";
import { PeerError } from "./errors.js";
import { fromGrpcStatus } from "./grpc-status.js";
import {
  FramingError,
  GRPC_CONTENT_TYPE,
  GrpcStatus,
  MessageCollector,
  MessageFramer,
  decodeGrpcMessage,
  frameMessage,
  isGrpcContentType,
  statusFromHttp,
} from "./grpc-wire.js";
import { MAX_MESSAGE_BYTES, PEER_METHODS } from "./peer-service.js";
import { BufferPool } from "./buffer-pool.js";
import { PieceReceiver } from "./piece-receiver.js";
import { MAX_HOLDERS_PER_BLOB } from "./known-peers.js";
import type { PeerBlobStat, PieceReadRequest, PieceSource, ReceivedPiece } from "./piece-source.js";
import { SessionPool } from "./session-pool.js";
import { ExchangeUnsupported } from "./exchange-channel.js";
import { ExchangeChannels } from "./exchange-channels.js";
import { ChunkDecoder } from "./wire-codec.js";

/** Receive window per call: a peer streams up to this far ahead of what we consumed (~1 GB/s on loopback). */
export const STREAM_WINDOW_BYTES = 8 * 1024 * 1024;
/** Receive window of a whole connection (the calls to one peer together). */
export const CONNECTION_WINDOW_BYTES = 16 * 1024 * 1024;
export const DEFAULT_STALL_TIMEOUT_MS = 10_000;
export const DEFAULT_IDLE_SESSION_CLOSE_MS = 60_000;
export const DEFAULT_STAT_TIMEOUT_MS = 5_000;
export const DEFAULT_EXCHANGE = true;
/** Largest Stat response accepted: a bitmap of a few thousand pieces and a few fields. */
const MAX_STAT_RESPONSE_BYTES = 4 * 1024 * 1024;
/** Longest peer address accepted in a peer exchange (host:port, bracketed IPv6). */
const MAX_PEER_ADDRESS_LENGTH = 256;
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

type EndReason = "aborted" | "stalled" | "closed";

/** How a call ended, as far as the transport tells: a gRPC status, or a failure before one arrived. */
interface CallOutcome {
  /** A gRPC status code as received (possibly one this client has no name for). */
  code: number | undefined;
  details: string;
  failure: Error | undefined;
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
   * same semantics either way.
   */
  async *readPieces(
    peerAddress: string,
    request: PieceReadRequest,
    signal: AbortSignal,
    onData?: (bytes: number) => void,
  ): AsyncGenerator<ReceivedPiece, void, undefined> {
    this.checkUsable(signal);
    if (this.channels?.speaksExchange(peerAddress) === true) {
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

  /**
   * Starts a call: request headers and the one request message. `onData` gets every DATA chunk and
   * returns true to pause reading (the consumer has enough to do). `next()` waits for the outcome or for
   * the next chunk; undefined means "data arrived, look again".
   */
  private start(
    peerAddress: string,
    path: string,
    body: Uint8Array,
    signal: AbortSignal,
    stallMs: number,
    onData: (chunk: Buffer) => boolean,
  ): ActiveCall {
    const lease = this.pool.acquire(peerAddress);
    const outcome: CallOutcome = { code: undefined, details: "", failure: undefined };
    let ended: EndReason | undefined;
    let settled = false;
    let wake: (() => void) | undefined;
    let consuming = false;
    let stallTimer: NodeJS.Timeout | undefined;
    const notify = (): void => {
      const resolve = wake;
      wake = undefined;
      resolve?.();
    };
    let stream: ClientHttp2Stream | undefined;
    const cancel = (reason: EndReason): void => {
      ended ??= reason;
      if (stream !== undefined && !stream.closed) stream.close(h2.NGHTTP2_CANCEL);
      settle();
    };
    const armStall = (): void => {
      clearTimeout(stallTimer);
      if (consuming || settled) return;
      stallTimer = setTimeout(() => {
        cancel("stalled");
      }, stallMs);
    };
    const fail = (error: Error): void => {
      outcome.failure ??= error;
      if (stream !== undefined && !stream.closed) stream.close(h2.NGHTTP2_CANCEL);
      settle();
    };
    const isSettled = (): boolean => settled;
    const settle = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(stallTimer);
      if (ended !== undefined) outcome.failure = this.endFailure(ended, peerAddress, stallMs, signal);
      notify();
    };
    const onAbort = (): void => {
      cancel("aborted");
    };
    signal.addEventListener("abort", onAbort, { once: true });
    this.cancellers.add(cancel);
    try {
      stream = lease.session.request(
        {
          [h2.HTTP2_HEADER_METHOD]: "POST",
          [h2.HTTP2_HEADER_PATH]: path,
          [h2.HTTP2_HEADER_CONTENT_TYPE]: GRPC_CONTENT_TYPE,
          [h2.HTTP2_HEADER_TE]: "trailers",
        },
        { endStream: false },
      );
    } catch (error: unknown) {
      outcome.failure = new PeerError("ERR_PEER_UNAVAILABLE", `peer ${peerAddress}: cannot start a call`, { cause: error });
      settled = true;
    }
    const active = stream;
    if (active !== undefined) {
      const statusFrom = (headers: IncomingHttpHeaders): void => {
        const code = headers["grpc-status"];
        if (typeof code !== "string") return;
        const parsed = Number(code);
        outcome.code = Number.isInteger(parsed) && parsed >= 0 ? parsed : GrpcStatus.UNKNOWN;
        const message = headers["grpc-message"];
        outcome.details = typeof message === "string" ? decodeGrpcMessage(message) : "";
      };
      active.on("response", (headers) => {
        const httpStatus = Number(headers[h2.HTTP2_HEADER_STATUS]);
        if (httpStatus !== 200) {
          outcome.code = statusFromHttp(httpStatus);
          outcome.details = `HTTP status ${httpStatus}`;
        } else if (!isGrpcContentType(headers[h2.HTTP2_HEADER_CONTENT_TYPE])) {
          fail(
            new PeerError(
              "ERR_PEER_PROTOCOL",
              `peer ${peerAddress} answered with content-type ${String(headers[h2.HTTP2_HEADER_CONTENT_TYPE])}`,
            ),
          );
          return;
        }
        statusFrom(headers);
        armStall();
      });
      active.on("trailers", statusFrom);
      active.on("data", (chunk: Buffer) => {
        if (settled) return;
        try {
          if (onData(chunk)) active.pause();
        } catch (error: unknown) {
          fail(error instanceof PeerError ? error : protocolError(error, peerAddress));
          return;
        }
        armStall();
        notify();
      });
      active.on("error", (error: Error) => {
        outcome.failure ??= new PeerError("ERR_PEER_UNAVAILABLE", `call to peer ${peerAddress} failed: ${error.message}`, { cause: error });
      });
      active.on("close", () => {
        if (outcome.code === undefined && outcome.failure === undefined && ended === undefined) {
          outcome.failure = new PeerError(
            "ERR_PEER_UNAVAILABLE",
            `peer ${peerAddress} closed the call without a status (HTTP/2 code ${active.rstCode})`,
          );
        }
        settle();
      });
      active.end(frameMessage(body));
      armStall();
    }
    return {
      next: async () => {
        if (!settled) {
          if (active?.isPaused() === true) active.resume();
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
          if (!isSettled()) return undefined;
        }
        return outcome;
      },
      consuming: (on: boolean) => {
        consuming = on;
        if (on) clearTimeout(stallTimer);
        else armStall();
      },
      finish: () => {
        clearTimeout(stallTimer);
        signal.removeEventListener("abort", onAbort);
        this.cancellers.delete(cancel);
        // Ends the call if the consumer stopped early; a no-op when it already finished.
        if (active !== undefined && !active.closed) active.close(h2.NGHTTP2_CANCEL);
        settled = true;
        lease.release();
      },
    };
  }

  private checkUsable(signal: AbortSignal): void {
    if (signal.aborted) throw new PeerError("ERR_PEER_ABORTED", "aborted before the call started", { cause: signal.reason });
    if (this.closed) throw new PeerError("ERR_PEER_ABORTED", "peer client is closed");
  }

  private endFailure(ended: EndReason, peerAddress: string, timeoutMs: number, signal: AbortSignal): PeerError {
    if (ended === "aborted") return new PeerError("ERR_PEER_ABORTED", `call to peer ${peerAddress} aborted`, { cause: signal.reason });
    if (ended === "closed") return new PeerError("ERR_PEER_ABORTED", "peer client closed");
    return new PeerError("ERR_PEER_TIMEOUT", `peer ${peerAddress} sent nothing for ${timeoutMs} ms`);
  }
}

interface ActiveCall {
  /** The outcome once the call ended, or undefined after new data (or while the consumer holds pieces). */
  next(): Promise<CallOutcome | undefined>;
  /** While the consumer works on pieces, the stall timer is off. */
  consuming(on: boolean): void;
  finish(): void;
}

function protocolError(error: unknown, peerAddress: string): PeerError {
  const detail = error instanceof FramingError || error instanceof RangeError ? error.message : "malformed message";
  return new PeerError("ERR_PEER_PROTOCOL", `peer ${peerAddress} sent a malformed response: ${detail}`, { cause: error });
}

function checkStat(response: StatResponse, peerAddress: string): PeerBlobStat {
  const { complete, size, pieceSize, bitmap } = response;
  const count = Number.isSafeInteger(size) && size >= 0 && pieceSize > 0 ? pieceCount(size, pieceSize) : -1;
  const valid =
    count >= 0 &&
    (complete || bitmap.byteLength === Math.ceil(count / 8)) &&
    response.pieceHashes.length <= count &&
    response.pieceHashes.every((hash) => hash.byteLength === 0 || hash.byteLength === PIECE_HASH_BYTES);
  if (!valid) {
    throw new PeerError(
      "ERR_PEER_PROTOCOL",
      `peer ${peerAddress} sent an inconsistent Stat (size ${size}, piece size ${pieceSize}, ${bitmap.byteLength}-byte bitmap, ${response.pieceHashes.length} hashes)`,
    );
  }
  const holders = response.holders
    .filter(
      (h) =>
        h.agentId.length > 0 &&
        h.agentId.length <= MAX_PEER_ADDRESS_LENGTH &&
        h.peerAddress.length > 0 &&
        h.peerAddress.length <= MAX_PEER_ADDRESS_LENGTH,
    )
    .slice(0, MAX_HOLDERS_PER_BLOB)
    .map((h) => ({ agentId: h.agentId, peerAddress: h.peerAddress }));
  const pieceHashes = response.pieceHashes.map((hash) => (hash.byteLength === 0 ? undefined : new Uint8Array(hash)));
  return { complete, size, pieceSize, bitmap: new Uint8Array(bitmap), pieceHashes, holders };
}
