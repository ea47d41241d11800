import { constants as h2, type Http2Session, type ServerHttp2Stream } from "node:http2";
import { ExchangeRequest, type ExchangeRead } from "../gen/peer/v1/peer.js";
import type { Digest } from "../oci/index.js";
import type { BlobStore } from "../store/index.js";
import { failureStatus, PeerStatus, toPeerStatus } from "./grpc-status.js";
import { FramingError, GRPC_CONTENT_TYPE, GrpcStatus, MessageCollector, MessageFramer, frameMessage } from "./grpc-wire.js";
import { checkPieces, type HeldBlob, readBytes } from "./piece-reader.js";
import type { PieceWriter } from "./piece-writer.js";
import { endCall } from "./server-call.js";
import { SharedReaders } from "./shared-readers.js";
import type { SlotRelease } from "./upload-slots.js";
import { encodeEnd } from "./wire-codec.js";

/**
 * Reads one Exchange stream may have open at once (being looked up, waiting for a relayed piece, or
 * sending). Each also needs an upload slot, of which a connection holds at most a few (4 of 16), so honest
 * clients stay far below; a read beyond it is refused alone with RESOURCE_EXHAUSTED.
 */
export const MAX_OPEN_READS_PER_STREAM = 16;
/**
 * A stream with no read open and no message for this long is ended (OK): a client keeps it no longer than
 * its own idle time (60 s by default), so only a client that forgot it gets here.
 */
export const EXCHANGE_IDLE_MS = 120_000;

/** What an Exchange stream needs from the PeerServer that accepted it. */
export interface ExchangeHost {
  readonly store: BlobStore;
  /** The blob as held here; NOT_FOUND when it is not. */
  describe(rawDigest: string): Promise<{ digest: Digest; blob: HeldBlob }>;
  /** UploadSlots.acquire: a slot for a read of `bytes` on `session`. */
  acquireUploadSlot(session: Http2Session | undefined, bytes: number): SlotRelease;
  /** A PieceWriter for one read, tagging its chunks with `requestId`; `small`: served from the small-read pool. */
  writer(stream: ServerHttp2Stream, signal: AbortSignal, requestId: number, small: boolean): PieceWriter;
  /** wait_ms as honoured (clamped). */
  clampWaitMs(waitMs: number): number;
  /** Largest request message accepted. */
  readonly maxRequestBytes: number;
  logFailure(method: string, peerStatus: PeerStatus): void;
  /** A read refused because the stream had too many open. */
  onRefused(): void;
}

/**
 * Serves one Exchange call (peer.proto): reads the client's messages as they come, serves each read
 * concurrently with the others (a read waiting for a relayed piece holds up no other), tags every chunk
 * with its read's id and ends each read with its own status. Per-read failures (a missing piece, a full
 * upload cap, a bad request) end that read only; a malformed message, a client that reads nothing, or the
 * server shutting down ends the whole stream with a status.
 *
 * Memory stays bounded: at most MAX_OPEN_READS_PER_STREAM reads, each with at most a couple of messages
 * unflushed (PieceWriter), and while the response side is backlogged the request side is not read, so a
 * client that stops reading also stops being able to send (HTTP/2 flow control).
 */
export class ExchangeStream {
  private readonly reads = new Map<number, AbortController>();
  private readonly tasks = new Set<Promise<void>>();
  /** Set once the stream fails as a whole: every read stops, the stream ends with this status. */
  private failure: PeerStatus | undefined;
  private wakeInput: (() => void) | undefined;
  private readonly session: Http2Session | undefined;
  private readonly stopped = new AbortController();
  private readonly readers: SharedReaders;
  /** The client stopped reading: the stream is reset rather than ended with trailers. */
  private cut = false;

  constructor(
    private readonly stream: ServerHttp2Stream,
    private readonly host: ExchangeHost,
    /** Aborted when the client resets the stream or the server shuts down. */
    private readonly signal: AbortSignal,
  ) {
    this.session = stream.session;
    this.readers = new SharedReaders(host.store, this.stopped.signal);
  }

  /** Open reads (tests). */
  get openReads(): number {
    return this.reads.size;
  }

  /** Serves the stream until it ends; never rejects. */
  async serve(): Promise<void> {
    const { stream, signal } = this;
    // Each read's PieceWriter listens for 'drain'.
    stream.setMaxListeners(MAX_OPEN_READS_PER_STREAM + 10);
    const onAbort = (): void => {
      this.fail(toPeerStatus(signal.reason));
    };
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      if (signal.aborted) onAbort();
      else stream.respond({ [h2.HTTP2_HEADER_STATUS]: 200, [h2.HTTP2_HEADER_CONTENT_TYPE]: GRPC_CONTENT_TYPE }, { waitForTrailers: true });
      await this.readRequests();
      // The client sent its last request (or the stream failed): the open reads finish, then the trailers.
      while (this.tasks.size > 0) await Promise.all(this.tasks);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
    this.end(this.failure ?? new PeerStatus(GrpcStatus.OK, ""));
  }

  /** Until the client ends its side or the stream fails. */
  private async readRequests(): Promise<void> {
    const { stream } = this;
    const collector = new MessageCollector();
    const framer = new MessageFramer(this.host.maxRequestBytes, collector);
    let inputEnded = false;
    const onData = (chunk: Buffer): void => {
      if (this.failure !== undefined) return;
      try {
        framer.push(chunk);
        for (const message of collector.messages.splice(0)) this.dispatch(message);
      } catch (error: unknown) {
        this.fail(requestError(error));
        return;
      }
      // Answers go out no faster than the client reads them: stop reading requests meanwhile.
      if (stream.writableNeedDrain && !stream.isPaused()) {
        stream.pause();
        stream.once("drain", () => {
          if (this.failure === undefined) stream.resume();
        });
      }
    };
    const onEnd = (): void => {
      inputEnded = true;
      if (!framer.idle) this.fail(new PeerStatus(GrpcStatus.INVALID_ARGUMENT, "the request stream ended inside a message"));
      this.wake();
    };
    let idleTimer: NodeJS.Timeout | undefined;
    const idle = (): void => {
      if (this.reads.size > 0) {
        idleTimer = setTimeout(idle, EXCHANGE_IDLE_MS);
        return;
      }
      // As if the client had ended its side: no more requests are read, the trailers follow.
      inputEnded = true;
      this.wake();
    };
    const onActivity = (): void => {
      clearTimeout(idleTimer);
      idleTimer = setTimeout(idle, EXCHANGE_IDLE_MS);
    };
    onActivity();
    stream.on("data", onActivity);
    stream.on("data", onData);
    stream.once("end", onEnd);
    try {
      const over = (): boolean => inputEnded || this.failure !== undefined;
      while (!over()) {
        await new Promise<void>((resolve) => {
          this.wakeInput = resolve;
        });
      }
    } finally {
      clearTimeout(idleTimer);
      stream.off("data", onActivity);
      stream.off("end", onEnd);
      // Whatever else the client sends is dropped (flowing, so HTTP/2 keeps acknowledging it).
      stream.off("data", onData);
      stream.on("data", () => undefined);
      stream.resume();
    }
  }

  private dispatch(message: Buffer): void {
    const request = ExchangeRequest.decode(message);
    const kind = request.kind;
    if (kind === undefined) throw new PeerStatus(GrpcStatus.INVALID_ARGUMENT, "an ExchangeRequest carries a read or a cancel");
    if (kind.$case === "cancel") {
      this.reads.get(kind.value.requestId)?.abort(new PeerStatus(GrpcStatus.CANCELLED, "cancelled by the client"));
      return;
    }
    const read = kind.value;
    if (this.reads.has(read.requestId)) {
      throw new PeerStatus(GrpcStatus.INVALID_ARGUMENT, `request id ${read.requestId} is already in use on this stream`);
    }
    if (this.reads.size >= MAX_OPEN_READS_PER_STREAM) {
      this.host.onRefused();
      this.writeEnd(read.requestId, new PeerStatus(GrpcStatus.RESOURCE_EXHAUSTED, `${this.reads.size} reads open on this stream already`));
      return;
    }
    const controller = new AbortController();
    this.reads.set(read.requestId, controller);
    const task = this.serveRead(read, controller).finally(() => {
      this.tasks.delete(task);
      if (this.reads.get(read.requestId) === controller) this.reads.delete(read.requestId);
    });
    this.tasks.add(task);
  }

  /** Never rejects: a failure becomes the read's end (or the stream's status). */
  private async serveRead(read: ExchangeRead, controller: AbortController): Promise<void> {
    const signal = AbortSignal.any([controller.signal, this.stopped.signal]);
    let release = (): void => undefined;
    let writer: PieceWriter | undefined;
    try {
      const { digest, blob } = await this.host.describe(read.digest);
      checkPieces(read, blob);
      signal.throwIfAborted();
      const slot = this.host.acquireUploadSlot(this.session, readBytes(read, blob));
      release = slot;
      writer = this.host.writer(this.stream, signal, read.requestId, slot.small);
      const sent = (): void => {
        // As for ReadPieces: the slot is free before the client learns the read is over.
        release();
        this.writeEnd(read.requestId, new PeerStatus(GrpcStatus.OK, ""));
      };
      await writer.sendPieces(this.host.store, digest, blob, read.pieces, this.host.clampWaitMs(read.waitMs), sent, this.readers);
    } catch (error: unknown) {
      const peerStatus = failureStatus(error, signal);
      if (this.failure !== undefined || peerStatus.code === GrpcStatus.CANCELLED) return;
      this.host.logFailure("exchange", peerStatus);
      // A client that reads nothing reads nothing for any read: the stream is what is stuck.
      if (peerStatus.code === GrpcStatus.DEADLINE_EXCEEDED) {
        this.cut = true;
        this.fail(peerStatus);
      } else this.writeEnd(read.requestId, peerStatus);
    } finally {
      release();
      writer?.dispose();
    }
  }

  private writeEnd(requestId: number, peerStatus: PeerStatus): void {
    const { stream } = this;
    if (this.failure !== undefined || stream.closed || stream.destroyed || !stream.writable) return;
    stream.write(frameMessage(encodeEnd(requestId, peerStatus.code, peerStatus.details)));
  }

  private fail(peerStatus: PeerStatus): void {
    if (this.failure !== undefined) return;
    this.failure = peerStatus;
    this.stopped.abort(peerStatus);
    this.wake();
  }

  private wake(): void {
    const wake = this.wakeInput;
    this.wakeInput = undefined;
    wake?.();
  }

  /** Trailers with the stream's status, after what was written. */
  private end(peerStatus: PeerStatus): void {
    const { stream } = this;
    if (peerStatus.code !== GrpcStatus.OK && peerStatus.code !== GrpcStatus.CANCELLED) this.host.logFailure("exchange", peerStatus);
    if (stream.closed || stream.destroyed) return;
    if (this.cut) {
      // Trailers would wait behind the data the client does not read: reset the stream, freeing its buffers.
      stream.close(h2.NGHTTP2_CANCEL);
      return;
    }
    endCall(stream, peerStatus);
  }
}

/** A message the stream cannot take: a framing error, or one that does not decode. */
function requestError(error: unknown): PeerStatus {
  if (error instanceof PeerStatus) return error;
  if (error instanceof FramingError) return new PeerStatus(error.code, error.message);
  const detail = error instanceof Error ? error.message : String(error);
  return new PeerStatus(GrpcStatus.INVALID_ARGUMENT, `malformed request: ${detail}`);
}
