import { type ClientHttp2Stream, constants as h2, type IncomingHttpHeaders } from "node:http2";
import { ExchangeRequest } from "../gen/peer/v1/peer.js";
import { type CallStatus, openCall, protocolError, responseStatus, trailerStatus } from "./client-call.js";
import { OwnPauses } from "../util/index.js";
import { PeerError } from "./errors.js";
import { fromGrpcStatus } from "./grpc-status.js";
import { GrpcStatus, MessageFramer, frameMessage } from "./grpc-wire.js";
import { MAX_MESSAGE_BYTES, PEER_METHODS } from "./peer-service.js";
import type { PieceReceiver } from "./piece-receiver.js";
import type { PieceReadRequest, ReceivedPiece } from "./piece-source.js";
import type { SessionLease } from "./session-pool.js";
import { ChunkDecoder, type ChunkSink } from "./wire-codec.js";

/**
 * Whole pieces the reads of one stream may hold ready for consumers that are still busy before the
 * stream stops reading the connection: as much as four ReadPieces calls held (two each), so a consumer
 * that is slow for a moment holds up the other reads on the stream no sooner than it did its own call.
 */
export const MAX_READY_PIECES_PER_STREAM = 8;
/** Largest request id; a stream that used them all is closed and the next read opens another. */
const MAX_REQUEST_ID = 0xffff_ffff;
/** Status codes as they arrive: numbers, possibly ones without a name here. */
const STATUS_OK: number = GrpcStatus.OK;
const STATUS_UNIMPLEMENTED: number = GrpcStatus.UNIMPLEMENTED;

/** The peer does not serve Exchange (UNIMPLEMENTED): the read is to be made with ReadPieces instead. */
export class ExchangeUnsupported extends Error {
  override readonly name = "ExchangeUnsupported";
}

export interface ExchangeChannelOptions {
  readonly address: string;
  readonly lease: SessionLease;
  /** A stream without reads for this long is closed (the connection's own idle timer then runs). */
  readonly idleCloseMs: number;
  /** Told once the channel takes no more reads (idle, failed, retired), so the next read opens another. */
  readonly onRetired: (channel: ExchangeChannel) => void;
  /** A receiver for one read's pieces. */
  readonly receiver: (request: PieceReadRequest) => PieceReceiver;
  /** Piece bytes received and never handed to a consumer (a read cut off, or cancelled). */
  readonly onWasted?: ((bytes: number) => void) | undefined;
}

/** One read multiplexed on the stream: its receiver, its outcome, its waiting consumer. */
interface OpenRead {
  readonly id: number;
  readonly receiver: PieceReceiver;
  readonly stallMs: number;
  readonly onData: ((bytes: number) => void) | undefined;
  /** Set once the read is over: undefined error = ended OK. */
  outcome: { readonly error: Error | undefined } | undefined;
  /** The consumer holds a piece: its time does not count as a stall. */
  consuming: boolean;
  stallTimer: NodeJS.Timeout | undefined;
  /** When the read last received a byte, or its consumer came back for more. */
  lastActivityMs: number;
  /** What of the silence since lastActivityMs was this process's own: it did not run. */
  readonly pauses: OwnPauses;
  wake: (() => void) | undefined;
}

function stopStall(read: OpenRead): void {
  clearTimeout(read.stallTimer);
  read.stallTimer = undefined;
}

/**
 * The client side of one Exchange stream to one peer (peer.proto): many reads at once, each with its own
 * id, its pieces arriving interleaved with the others' and handed to its consumer in request order. The
 * semantics per read are those of a ReadPieces call (PeerClient.readPieces): pieces in request order,
 * ERR_PEER_TIMEOUT after stallMs + waitMs without a byte for it, PeerError codes from the read's status.
 * A failure of the stream fails every read on it; the channel then retires and the next read opens a new one.
 */
export class ExchangeChannel implements ChunkSink {
  private readonly reads = new Map<number, OpenRead>();
  private readonly stream: ClientHttp2Stream;
  private readonly framer = new MessageFramer(MAX_MESSAGE_BYTES, new ChunkDecoder(this));
  private nextId = 1;
  /** The read whose chunk is being decoded; undefined while discarding a chunk of a read no longer open. */
  private current: OpenRead | undefined;
  private discarding = false;
  /** Pieces complete and not yet taken, over all reads. */
  private ready = 0;
  private paused = false;
  private retired = false;
  private failure: Error | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private status: CallStatus | undefined;

  constructor(private readonly options: ExchangeChannelOptions) {
    const { address } = options;
    this.stream = openCall(options.lease.session, PEER_METHODS.exchange);
    const stream = this.stream;
    stream.on("response", (headers) => {
      const status = responseStatus(headers, address);
      if (status instanceof PeerError) this.fail(status);
      else if (status !== undefined) this.status = status;
    });
    stream.on("trailers", (headers: IncomingHttpHeaders) => {
      this.status = trailerStatus(headers) ?? this.status;
    });
    // The peer's side is over, and everything it sent before was decoded ('end' follows the last 'data';
    // 'trailers' may come while data still waits in a paused stream): so is the stream, even while ours is
    // still open. A trailers-only answer (UNIMPLEMENTED from a peer without Exchange) ends here too.
    stream.on("end", () => {
      this.fail(this.closeError());
    });
    stream.on("data", (chunk: Buffer) => {
      if (this.failure !== undefined) return;
      try {
        this.framer.push(chunk);
      } catch (error: unknown) {
        this.fail(error instanceof PeerError ? error : protocolError(error, address));
        return;
      }
      if (this.ready >= MAX_READY_PIECES_PER_STREAM) this.pause();
    });
    stream.on("error", (error: Error) => {
      // A status already received says more than the reset that may follow it.
      this.fail(
        this.status === undefined
          ? new PeerError("ERR_PEER_UNAVAILABLE", `stream to peer ${address} failed: ${error.message}`, { cause: error })
          : this.closeError(),
      );
    });
    stream.on("close", () => {
      this.fail(this.closeError());
      options.lease.release();
    });
  }

  /** Whether a new read may be started here. */
  get usable(): boolean {
    return !this.retired && this.failure === undefined && this.nextId <= MAX_REQUEST_ID;
  }

  /** Reads open (tests). */
  get openReads(): number {
    return this.reads.size;
  }

  /** See PieceSource.readPieces. Throws ExchangeUnsupported, before any piece, when the peer does not serve Exchange. */
  async *read(
    request: PieceReadRequest,
    signal: AbortSignal,
    stallTimeoutMs: number,
    onData?: (bytes: number) => void,
  ): AsyncGenerator<ReceivedPiece, void, undefined> {
    const read: OpenRead = {
      id: this.nextId++,
      receiver: this.options.receiver(request),
      // The peer may be silent while it waits up to waitMs for a piece it is still receiving.
      stallMs: stallTimeoutMs + request.waitMs,
      onData,
      outcome: undefined,
      consuming: false,
      stallTimer: undefined,
      pauses: new OwnPauses(stallTimeoutMs + request.waitMs),
      lastActivityMs: performance.now(),
      wake: undefined,
    };
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    const sent =
      this.failure === undefined &&
      this.send({
        kind: {
          $case: "read",
          value: {
            requestId: read.id,
            digest: request.digest,
            pieceSize: request.pieceSize,
            pieces: [...request.pieces],
            waitMs: request.waitMs,
          },
        },
      });
    if (sent) {
      this.reads.set(read.id, read);
      this.armStall(read);
    } else {
      read.outcome = {
        error: this.failure ?? new PeerError("ERR_PEER_UNAVAILABLE", `stream to peer ${this.options.address} no longer takes requests`),
      };
    }
    const onAbort = (): void => {
      this.settle(read, new PeerError("ERR_PEER_ABORTED", `read from peer ${this.options.address} aborted`, { cause: signal.reason }));
    };
    signal.addEventListener("abort", onAbort, { once: true });
    if (signal.aborted) onAbort();
    let delivered = false;
    try {
      for (;;) {
        // Pieces still in the receiver when the consumer stops early are released by dispose().
        for (let piece = this.take(read); piece !== undefined; piece = this.take(read)) {
          read.consuming = true;
          stopStall(read);
          delivered = true;
          yield piece;
        }
        read.consuming = false;
        if (read.outcome === undefined) {
          this.armStall(read);
          await new Promise<void>((resolve) => {
            read.wake = resolve;
          });
          continue;
        }
        const { error } = read.outcome;
        // The caller makes the read again with ReadPieces only if no piece of it was handed over.
        if (error instanceof ExchangeUnsupported && delivered) throw this.protocol(`sent pieces, then ${error.message}`);
        if (error !== undefined) throw error;
        read.receiver.end();
        for (let piece = this.take(read); piece !== undefined; piece = this.take(read)) yield piece;
        return;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      stopStall(read);
      read.pauses.close();
      if (this.reads.get(read.id) === read) {
        // The consumer stopped early, or the read was aborted or timed out: the peer stops serving it.
        this.reads.delete(read.id);
        if (this.current === read) {
          this.current = undefined;
          this.discarding = true;
        }
        this.send({ kind: { $case: "cancel", value: { requestId: read.id } } });
      }
      this.ready -= read.receiver.pending;
      const wasted = read.receiver.undeliveredBytes;
      if (wasted > 0) this.options.onWasted?.(wasted);
      read.receiver.dispose();
      this.resumeIfRoom();
      this.idleCheck();
    }
  }

  /** Takes no more reads; the stream is closed once those open are over. */
  retire(): void {
    if (this.retired) return;
    this.retired = true;
    this.options.onRetired(this);
    this.idleCheck();
  }

  /** Fails every read with `error` and cuts the stream. */
  destroy(error: Error): void {
    this.fail(error);
  }

  // ChunkSink: what the stream's decoder hands on.

  onChunkStart(piece: number, offset: number, length: number, requestId: number): void {
    const read = this.reads.get(requestId);
    if (read === undefined) {
      // A read this side cancelled or gave up on: its chunks still in flight are dropped.
      if (requestId === 0 || requestId >= this.nextId) throw this.protocol(`sent a chunk for request ${requestId}, never made`);
      this.current = undefined;
      this.discarding = true;
      return;
    }
    this.discarding = false;
    this.current = read;
    read.receiver.onChunkStart(piece, offset, length);
  }

  onChunkData(bytes: Buffer): void {
    const read = this.current;
    if (read === undefined) {
      if (!this.discarding) throw this.protocol("sent data outside a chunk");
      this.options.onWasted?.(bytes.byteLength);
      return;
    }
    const before = read.receiver.pending;
    read.receiver.onChunkData(bytes);
    this.ready += read.receiver.pending - before;
    read.onData?.(bytes.byteLength);
    this.armStall(read);
    if (read.receiver.pending > before) this.wake(read);
  }

  onEnd(requestId: number, code: number, message: string): void {
    this.current = undefined;
    this.discarding = false;
    const read = this.reads.get(requestId);
    if (read === undefined) {
      if (requestId === 0 || requestId >= this.nextId) throw this.protocol(`ended request ${requestId}, never made`);
      return;
    }
    // Over on the peer's side: nothing to cancel.
    this.reads.delete(requestId);
    this.settle(read, code === STATUS_OK ? undefined : fromGrpcStatus(code, message, this.options.address));
  }

  private take(read: OpenRead): ReceivedPiece | undefined {
    const piece = read.receiver.shift();
    if (piece !== undefined) {
      this.ready--;
      this.resumeIfRoom();
    }
    return piece;
  }

  private settle(read: OpenRead, error: Error | undefined): void {
    if (read.outcome !== undefined) return;
    read.outcome = { error };
    stopStall(read);
    this.wake(read);
  }

  private wake(read: OpenRead): void {
    const wake = read.wake;
    read.wake = undefined;
    wake?.();
  }

  /**
   * Restarts the read's stall clock. One timer per read, checking the clock when it fires, rather than a
   * new timer per DATA chunk (tens of thousands per gigabyte).
   */
  private armStall(read: OpenRead): void {
    read.lastActivityMs = performance.now();
    read.pauses.reset(read.lastActivityMs);
    // While the stream is paused for other reads' consumers, silence is ours, not the peer's.
    if (read.consuming || read.outcome !== undefined || this.paused) {
      stopStall(read);
      return;
    }
    if (read.stallTimer !== undefined) return;
    const check = (): void => {
      // This process's own pauses are not the peer's silence (what the peer sent meanwhile may still be
      // unread): the next check, after them, comes after the sockets are read.
      const now = performance.now();
      const silentMs = now - read.lastActivityMs - read.pauses.ms(now);
      if (silentMs < read.stallMs) {
        read.stallTimer = setTimeout(check, read.stallMs - silentMs);
        return;
      }
      read.stallTimer = undefined;
      this.settle(read, new PeerError("ERR_PEER_TIMEOUT", `peer ${this.options.address} sent nothing for ${read.stallMs} ms`));
    };
    read.stallTimer = setTimeout(check, read.stallMs);
  }

  private pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.stream.pause();
    for (const read of this.reads.values()) stopStall(read);
  }

  private resumeIfRoom(): void {
    if (!this.paused || this.ready >= MAX_READY_PIECES_PER_STREAM) return;
    this.paused = false;
    this.stream.resume();
    for (const read of this.reads.values()) this.armStall(read);
  }

  /** False when the stream takes no more messages (it is closing). */
  private send(request: ExchangeRequest): boolean {
    const { stream } = this;
    if (stream.closed || stream.destroyed || !stream.writable) return false;
    stream.write(frameMessage(ExchangeRequest.encode(request).finish()));
    return true;
  }

  /** Closes the stream once no read is open and it is retired or idle. */
  private idleCheck(): void {
    if (this.reads.size > 0 || this.failure !== undefined) return;
    if (this.retired || this.nextId > MAX_REQUEST_ID) {
      this.endStream();
      return;
    }
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      this.retire();
    }, this.options.idleCloseMs);
    this.idleTimer.unref();
  }

  private endStream(): void {
    clearTimeout(this.idleTimer);
    if (!this.retired) {
      this.retired = true;
      this.options.onRetired(this);
    }
    // Half-close: the peer answers with its trailers, then the stream closes and frees the connection.
    if (!this.stream.closed && this.stream.writable) this.stream.end();
  }

  private fail(error: Error): void {
    if (this.failure !== undefined) return;
    this.failure = error;
    clearTimeout(this.idleTimer);
    if (!this.retired) {
      this.retired = true;
      this.options.onRetired(this);
    }
    for (const read of this.reads.values()) this.settle(read, error);
    this.reads.clear();
    if (!this.stream.closed) this.stream.close(h2.NGHTTP2_CANCEL);
  }

  /** Why reads still open when the stream closed did not end. */
  private closeError(): Error {
    const { address } = this.options;
    const status = this.status;
    if (status?.code === STATUS_UNIMPLEMENTED) return new ExchangeUnsupported(`peer ${address} does not serve Exchange: ${status.details}`);
    if (status !== undefined && status.code !== STATUS_OK) return fromGrpcStatus(status.code, status.details, address);
    if (!this.framer.idle) return this.protocol("ended the stream inside a message");
    if (status?.code === STATUS_OK) return this.protocol("ended the stream with reads open");
    return new PeerError("ERR_PEER_UNAVAILABLE", `peer ${address} closed the stream without a status (HTTP/2 code ${this.stream.rstCode})`);
  }

  private protocol(message: string): PeerError {
    return new PeerError("ERR_PEER_PROTOCOL", `peer ${this.options.address} ${message}`);
  }
}
