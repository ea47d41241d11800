import { constants as h2, type ServerHttp2Stream } from "node:http2";
import type { Digest } from "../oci/index.js";
import { pieceSpan } from "../piece/index.js";
import type { BlobReader, BlobStore } from "../store/index.js";
import type { TokenBucket } from "../throttle/index.js";
import { BufferPool } from "./buffer-pool.js";
import { PeerStatus } from "./grpc-status.js";
import { GRPC_CONTENT_TYPE, GrpcStatus, MESSAGE_PREFIX_BYTES, writeMessagePrefix } from "./grpc-wire.js";
import { MESSAGE_DATA_BYTES } from "./peer-service.js";
import { type HeldBlob, waitServable } from "./piece-reader.js";
import type { ReaderLease, SharedReaders } from "./shared-readers.js";
import { chunkMessageEndingAt, MAX_CHUNK_HEADER_BYTES } from "./wire-codec.js";

/**
 * Messages a call may have written but not yet flushed to the connection: enough to keep the socket busy
 * while the next piece is read from disk, few enough that a call's memory stays at a few MiB.
 */
export const MAX_QUEUED_MESSAGES = 2;
/** Default for a client that stops reading: its call is cut after this long without a flushed message. */
export const DEFAULT_SEND_STALL_TIMEOUT_MS = 15_000;
/** One message: gRPC prefix, chunk header, MESSAGE_DATA_BYTES of piece. */
export const MESSAGE_BUFFER_BYTES = MESSAGE_PREFIX_BYTES + MAX_CHUNK_HEADER_BYTES + MESSAGE_DATA_BYTES;
/**
 * Idle message buffers a server keeps for reuse (4 MiB). Buffers in use are bounded by the calls: each
 * holds at most MAX_QUEUED_MESSAGES (the one being read counts once it is written), so a server's
 * messages take at most maxConcurrentUploads × MAX_QUEUED_MESSAGES MiB (32 MiB at 16 uploads); a call
 * waiting for the upload cap holds none (it takes its tokens before its buffer).
 */
export const MAX_IDLE_MESSAGE_BYTES = 4 * MESSAGE_BUFFER_BYTES;

async function openReader(
  store: BlobStore,
  digest: Digest,
  blob: HeldBlob,
  signal: AbortSignal,
  readers: SharedReaders | undefined,
): Promise<ReaderLease> {
  if (blob.partial === undefined && readers !== undefined) return readers.acquire(digest);
  const reader = blob.partial === undefined ? await store.openReader(digest, signal) : blob.partial.openReader();
  return { reader, close: () => reader.close() };
}

/**
 * The pool a server's PieceWriters share. HTTP/2 writes hand the buffer to the connection without copying
 * it, so a buffer is free again only when its write's callback fires.
 */
export function messagePool(): BufferPool {
  return new BufferPool({ maxIdleBytes: MAX_IDLE_MESSAGE_BYTES });
}

export interface PieceWriterOptions {
  readonly stream: ServerHttp2Stream;
  /** Aborted when the call is cancelled or the server closes: stops reading and waiting at once. */
  readonly signal: AbortSignal;
  /** Message buffers (messagePool()), shared by the server's calls. */
  readonly pool: BufferPool;
  /** Node-wide upload rate; undefined = uncapped. */
  readonly bucket?: TokenBucket | undefined;
  /**
   * A small read (at most SMALL_READ_BYTES, served from the small-read pool): its bytes pay the upload
   * rate at once (TokenBucket.takeAhead) instead of queueing behind the layer pieces' megabytes.
   */
  readonly small?: boolean | undefined;
  readonly sendStallTimeoutMs?: number | undefined;
  /** Called with the piece bytes of each message once it has been flushed to the connection. */
  readonly onSent?: ((bytes: number) => void) | undefined;
  /**
   * The Exchange read this writer serves: its chunks carry the id, and the stream's headers and trailers
   * are the Exchange stream's, not this writer's. Undefined for a ReadPieces call.
   */
  readonly requestId?: number | undefined;
}

/**
 * Writes pieces to one ReadPieces call as ~1 MiB gRPC messages. Each message's bytes are read from the
 * store straight into a pooled buffer behind the message's prefix and header, and handed to HTTP/2 as
 * one write: one copy per byte (disk cache to buffer) on this side. It reads only as fast as the call
 * flushes, so memory per call stays flat whatever the blob size.
 */
export class PieceWriter {
  private queued = 0;
  private started = false;
  private wake: (() => void) | undefined;
  private lastFlushMs = performance.now();
  private readonly notify = (): void => {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  };

  constructor(private readonly options: PieceWriterOptions) {
    options.stream.on("drain", this.notify);
    options.signal.addEventListener("abort", this.notify);
  }

  dispose(): void {
    this.options.stream.off("drain", this.notify);
    this.options.signal.removeEventListener("abort", this.notify);
  }

  /**
   * Streams `pieces` of the blob in order. A piece of a partial blob that is still arriving here is relayed
   * once it is held, waiting at most `waitMs` for it (FAILED_PRECONDITION after that). `sent` is called once
   * the last piece is written, before the blob reader is closed: the caller frees the upload slot and ends
   * the response there, as closing a file can take a while on a busy thread pool.
   */
  async sendPieces(
    store: BlobStore,
    digest: Digest,
    blob: HeldBlob,
    pieces: readonly number[],
    waitMs: number,
    sent: () => void,
    /** Readers of complete blobs shared with other reads (an Exchange stream's); each read opens its own without. */
    readers?: SharedReaders,
  ): Promise<void> {
    const { signal } = this.options;
    let lease: ReaderLease | undefined;
    try {
      for (const index of pieces) {
        if (blob.partial !== undefined && blob.partial.state !== "committed") {
          await waitServable(blob.partial, index, waitMs, signal);
        }
        lease ??= await openReader(store, digest, blob, signal, readers);
        const { reader } = lease;
        const span = pieceSpan(index, blob.size, blob.pieceSize);
        try {
          await this.sendPiece(reader, index, span.start, span.end - span.start);
        } catch (error: unknown) {
          // An aborted partial is "piece no longer held", not a server fault.
          if (blob.partial !== undefined && !signal.aborted && !(error instanceof PeerStatus)) {
            throw new PeerStatus(GrpcStatus.FAILED_PRECONDITION, `piece ${index} is no longer held`, { cause: error });
          }
          throw error;
        }
      }
      sent();
    } finally {
      await lease?.close();
    }
  }

  /** Streams piece `index`, `length` bytes of the blob from `start`, as chunk messages. */
  async sendPiece(reader: BlobReader, index: number, start: number, length: number): Promise<void> {
    this.respond();
    for (let offset = 0; offset < length;) {
      const dataLength = Math.min(MESSAGE_DATA_BYTES, length - offset);
      const { bucket, signal, pool } = this.options;
      // Tokens first: a call waiting for the upload cap holds no buffer (16 calls sharing a capped link
      // otherwise hold a megabyte each while they wait).
      if (bucket !== undefined) {
        if (this.options.small === true) bucket.takeAhead(dataLength);
        else await bucket.take(dataLength, signal);
      }
      signal.throwIfAborted();
      const buffer = pool.take(MESSAGE_BUFFER_BYTES);
      let handedOver = false;
      try {
        const chunk = chunkMessageEndingAt(buffer, buffer.byteLength, index, offset, dataLength, this.options.requestId);
        const messageStart = chunk.message.byteOffset - buffer.byteOffset;
        writeMessagePrefix(buffer, messageStart - MESSAGE_PREFIX_BYTES, chunk.message.byteLength);
        await reader.read(chunk.data, start + offset);
        signal.throwIfAborted();
        handedOver = true;
        this.write(buffer.subarray(messageStart - MESSAGE_PREFIX_BYTES), buffer, dataLength);
      } finally {
        if (!handedOver) pool.give(buffer);
      }
      offset += dataLength;
      await this.whileBacklogged();
    }
  }

  /** Ends the call with status OK once everything written is flushed. */
  finish(): void {
    this.respond();
    const { stream } = this.options;
    stream.once("wantTrailers", () => {
      stream.sendTrailers({ "grpc-status": String(GrpcStatus.OK) });
    });
    stream.end();
  }

  /** Response headers go out with the first piece; trailers follow the last (waitForTrailers). */
  private respond(): void {
    if (this.started) return;
    this.started = true;
    // An Exchange stream answered its headers when it opened.
    if (this.options.requestId !== undefined) return;
    this.options.stream.respond(
      { [h2.HTTP2_HEADER_STATUS]: 200, [h2.HTTP2_HEADER_CONTENT_TYPE]: GRPC_CONTENT_TYPE },
      { waitForTrailers: true },
    );
  }

  private write(message: Buffer, owner: Buffer, dataBytes: number): void {
    const { stream, pool, onSent } = this.options;
    this.queued++;
    stream.write(message, (error?: Error | null) => {
      this.queued--;
      pool.give(owner);
      this.lastFlushMs = performance.now();
      if (error == null) onSent?.(dataBytes);
      this.notify();
    });
  }

  /**
   * Never reads ahead of what the call accepts: waits for 'drain' after the stream's buffer filled, and
   * keeps at most MAX_QUEUED_MESSAGES unflushed in any case. A client that reads nothing for the stall
   * timeout loses the call (its upload slot is freed for others).
   */
  private async whileBacklogged(): Promise<void> {
    const { stream, signal } = this.options;
    const stallMs = this.options.sendStallTimeoutMs ?? DEFAULT_SEND_STALL_TIMEOUT_MS;
    while (!signal.aborted && (stream.writableNeedDrain || this.queued >= MAX_QUEUED_MESSAGES)) {
      const waitedMs = performance.now() - this.lastFlushMs;
      if (waitedMs >= stallMs) throw new PeerStatus(GrpcStatus.DEADLINE_EXCEEDED, `the client read nothing for ${Math.round(waitedMs)} ms`);
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        timer = setTimeout(resolve, stallMs - waitedMs);
      });
      clearTimeout(timer);
    }
    signal.throwIfAborted();
  }
}
