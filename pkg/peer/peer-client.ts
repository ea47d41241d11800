import { Metadata, status, type ChannelOptions, type ServiceError } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { ReadPiecesResponse, StatResponse } from "../gen/peer/v1/peer.js";
import type { AgentMetrics } from "../metrics/index.js";
import type { Digest } from "../oci/index.js";
import { pieceCount } from "../piece/index.js";
import { ChannelPool } from "./channel-pool.js";
import { PeerError } from "./errors.js";
import { fromServiceError } from "./grpc-status.js";
import { PieceAssembler } from "./piece-assembler.js";
import type { PieceReadRequest, PieceSource, ReceivedPiece } from "./piece-source.js";
import { MAX_MESSAGE_BYTES, peerService } from "./peer-service.js";

/** The receive window that lets grpc-js reach ~1 GB/s on loopback (ENVIRONMENT.md); only the client side honours it. */
export const FLOW_CONTROL_WINDOW_BYTES = 16 * 1024 * 1024;
export const DEFAULT_STALL_TIMEOUT_MS = 10_000;
export const DEFAULT_IDLE_CHANNEL_CLOSE_MS = 60_000;
export const DEFAULT_STAT_TIMEOUT_MS = 5_000;
const KEEPALIVE_TIME_MS = 30_000;
const KEEPALIVE_TIMEOUT_MS = 10_000;

export interface PeerClientOptions {
  readonly logger: Logger;
  readonly metrics?: AgentMetrics | undefined;
  /**
   * A call that receives no message for this long (plus the request's waitMs, for which the peer may
   * legitimately be silent) is cancelled with ERR_PEER_TIMEOUT. Time the consumer spends on a piece
   * does not count.
   */
  readonly stallTimeoutMs?: number | undefined;
  readonly idleChannelCloseMs?: number | undefined;
  readonly statTimeoutMs?: number | undefined;
  /** For benchmarks; defaults to FLOW_CONTROL_WINDOW_BYTES. */
  readonly flowControlWindowBytes?: number | undefined;
}

/** What a peer holds of a blob (Stat). */
export interface PeerBlobStat {
  readonly complete: boolean;
  readonly size: number;
  readonly pieceSize: number;
  /** Pieces the peer can serve now, MSB first (see PieceBitmap); empty when complete. */
  readonly bitmap: Uint8Array;
}

type EndReason = "aborted" | "stalled" | "closed";

/** Reads pieces from other agents over gRPC (PeerService). Does not verify piece hashes: the scheduler does. */
export class PeerClient implements PieceSource {
  private readonly pool: ChannelPool;
  private readonly stallTimeoutMs: number;
  private readonly statTimeoutMs: number;
  /** Cancels every call in progress; used by close(). */
  private readonly cancellers = new Set<(reason: EndReason) => void>();
  private closed = false;

  constructor(private readonly options: PeerClientOptions) {
    const channelOptions: ChannelOptions = {
      "grpc-node.flow_control_window": options.flowControlWindowBytes ?? FLOW_CONTROL_WINDOW_BYTES,
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
      "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
    };
    this.pool = new ChannelPool({ channelOptions, idleCloseMs: options.idleChannelCloseMs ?? DEFAULT_IDLE_CHANNEL_CLOSE_MS });
    this.stallTimeoutMs = options.stallTimeoutMs ?? DEFAULT_STALL_TIMEOUT_MS;
    this.statTimeoutMs = options.statTimeoutMs ?? DEFAULT_STAT_TIMEOUT_MS;
  }

  /** Channels open now (one per peer recently talked to). */
  get openChannels(): number {
    return this.pool.size;
  }

  async *readPieces(peerAddress: string, request: PieceReadRequest, signal: AbortSignal): AsyncGenerator<ReceivedPiece, void, undefined> {
    this.checkUsable(signal);
    const lease = this.pool.acquire(peerAddress);
    const call = lease.client.makeServerStreamRequest(
      peerService.readPieces.path,
      peerService.readPieces.requestSerialize,
      peerService.readPieces.responseDeserialize,
      { digest: request.digest, pieceSize: request.pieceSize, pieces: [...request.pieces], waitMs: request.waitMs },
      new Metadata(),
    );
    let ended: EndReason | undefined;
    const cancel = (reason: EndReason): void => {
      ended ??= reason;
      call.cancel();
    };
    const onAbort = (): void => {
      cancel("aborted");
    };
    signal.addEventListener("abort", onAbort, { once: true });
    this.cancellers.add(cancel);
    // The peer may be silent while it waits up to waitMs for a piece it is still receiving.
    const stallMs = this.stallTimeoutMs + request.waitMs;
    let stallTimer: NodeJS.Timeout | undefined;
    const armStall = (): void => {
      clearTimeout(stallTimer);
      stallTimer = setTimeout(() => {
        cancel("stalled");
      }, stallMs);
    };
    const assembler = new PieceAssembler(request.pieces, request.pieceSize, peerAddress);
    const received = this.options.metrics?.peerBytesReceived;
    try {
      armStall();
      for await (const chunk of call as AsyncIterable<ReadPiecesResponse>) {
        received?.inc(chunk.data.byteLength);
        const pieces = assembler.push(chunk);
        if (pieces.length > 0) {
          // The consumer's time is not the peer's stall.
          clearTimeout(stallTimer);
          for (const piece of pieces) yield piece;
        }
        armStall();
      }
      clearTimeout(stallTimer);
      for (const piece of assembler.end()) yield piece;
    } catch (error: unknown) {
      throw this.failure(error, ended, signal, peerAddress, stallMs);
    } finally {
      clearTimeout(stallTimer);
      signal.removeEventListener("abort", onAbort);
      this.cancellers.delete(cancel);
      // Ends the call if the consumer stopped early; a no-op when it already finished.
      call.cancel();
      lease.release();
    }
  }

  /** What `peerAddress` holds of `digest`; undefined when it holds nothing of it. */
  async stat(peerAddress: string, digest: Digest, signal: AbortSignal): Promise<PeerBlobStat | undefined> {
    this.checkUsable(signal);
    const lease = this.pool.acquire(peerAddress);
    let ended: EndReason | undefined;
    try {
      const response = await new Promise<StatResponse>((resolve, reject) => {
        const call = lease.client.makeUnaryRequest(
          peerService.stat.path,
          peerService.stat.requestSerialize,
          peerService.stat.responseDeserialize,
          { digest },
          new Metadata(),
          { deadline: Date.now() + this.statTimeoutMs },
          (error, value) => {
            signal.removeEventListener("abort", onAbort);
            this.cancellers.delete(cancel);
            if (error) reject(error);
            else if (value === undefined) reject(new PeerError("ERR_PEER_PROTOCOL", `peer ${peerAddress} sent an empty Stat response`));
            else resolve(value);
          },
        );
        const cancel = (reason: EndReason): void => {
          ended ??= reason;
          call.cancel();
        };
        const onAbort = (): void => {
          cancel("aborted");
        };
        signal.addEventListener("abort", onAbort, { once: true });
        this.cancellers.add(cancel);
      });
      return checkStat(response, peerAddress);
    } catch (error: unknown) {
      if (ended === undefined && isServiceError(error) && error.code === status.NOT_FOUND) return undefined;
      throw this.failure(error, ended, signal, peerAddress, this.statTimeoutMs);
    } finally {
      lease.release();
    }
  }

  /** Cancels calls in progress (they fail with ERR_PEER_ABORTED) and closes every channel. */
  close(): void {
    this.closed = true;
    for (const cancel of [...this.cancellers]) cancel("closed");
    this.pool.close();
  }

  private checkUsable(signal: AbortSignal): void {
    if (signal.aborted) throw new PeerError("ERR_PEER_ABORTED", "aborted before the call started", { cause: signal.reason });
    if (this.closed) throw new PeerError("ERR_PEER_ABORTED", "peer client is closed");
  }

  private failure(error: unknown, ended: EndReason | undefined, signal: AbortSignal, peerAddress: string, timeoutMs: number): PeerError {
    if (ended === "aborted") return new PeerError("ERR_PEER_ABORTED", `call to peer ${peerAddress} aborted`, { cause: signal.reason });
    if (ended === "closed") return new PeerError("ERR_PEER_ABORTED", "peer client closed", { cause: error });
    if (ended === "stalled") return new PeerError("ERR_PEER_TIMEOUT", `peer ${peerAddress} sent nothing for ${timeoutMs} ms`, { cause: error });
    if (error instanceof PeerError) return error;
    if (isServiceError(error)) return fromServiceError(error, peerAddress);
    this.options.logger.warn({ err: error, peer: peerAddress }, "unexpected peer call failure");
    return new PeerError("ERR_PEER_UNAVAILABLE", `call to peer ${peerAddress} failed`, { cause: error });
  }
}

function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && "code" in error && typeof error.code === "number" && "details" in error && typeof error.details === "string";
}

function checkStat(response: StatResponse, peerAddress: string): PeerBlobStat {
  const { complete, size, pieceSize, bitmap } = response;
  const valid =
    Number.isSafeInteger(size) && size >= 0 && pieceSize > 0 && (complete || bitmap.byteLength === Math.ceil(pieceCount(size, pieceSize) / 8));
  if (!valid) throw new PeerError("ERR_PEER_PROTOCOL", `peer ${peerAddress} sent an inconsistent Stat (size ${size}, piece size ${pieceSize}, ${bitmap.byteLength}-byte bitmap)`);
  return { complete, size, pieceSize, bitmap: new Uint8Array(bitmap) };
}
