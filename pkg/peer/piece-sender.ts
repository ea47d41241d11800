import type { ServerWritableStream } from "@grpc/grpc-js";
import type { ReadPiecesRequest } from "../gen/peer/v1/peer.js";
import type { TokenBucket } from "../throttle/index.js";
import { MESSAGE_DATA_BYTES } from "./peer-service.js";
import type { PieceLength } from "./piece-reader.js";
import { chunkMessageIn, MAX_CHUNK_HEADER_BYTES, type ChunkMessage } from "./wire-codec.js";

/**
 * Messages a call may have written but not yet flushed to HTTP/2. grpc-js's objectMode stream would take
 * 16 before write() returns false; a smaller window keeps a call's memory at a few MiB while still
 * keeping the socket busy.
 */
export const MAX_QUEUED_MESSAGES = 4;
/** Idle message buffers kept for reuse, server-wide. */
const MAX_POOLED_MESSAGES = 16;

/**
 * Message buffers reused once grpc-js has flushed them (it copies each message into its own frame
 * buffer when the write starts, so a buffer is free again when the write's callback fires). Recycling
 * them, instead of allocating a fresh megabyte per message, saves a page-faulting copy and keeps
 * V8's external-memory-triggered garbage collections down.
 */
export class MessagePool {
  private readonly free: Buffer[] = [];
  readonly bufferBytes = MAX_CHUNK_HEADER_BYTES + MESSAGE_DATA_BYTES;

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.bufferBytes);
  }

  give(buffer: Buffer): void {
    if (this.free.length < MAX_POOLED_MESSAGES) this.free.push(buffer);
  }
}

export interface PieceSenderOptions {
  readonly call: ServerWritableStream<ReadPiecesRequest, Buffer>;
  /** Aborted when the call is cancelled or the server closes: stops reading and waiting at once. */
  readonly signal: AbortSignal;
  readonly pool: MessagePool;
  /** Node-wide upload rate; undefined = uncapped. */
  readonly bucket?: TokenBucket | undefined;
  /** Called with the piece bytes of each message once it has been flushed to the connection. */
  readonly onSent?: ((bytes: number) => void) | undefined;
}

/**
 * Writes pieces to one ReadPieces call as ~1 MiB messages. It reads its source only as fast as the call
 * flushes (write callbacks and 'drain'), so memory per call stays flat whatever the blob size.
 */
export class PieceSender {
  private queued = 0;
  private wake: (() => void) | undefined;
  private readonly notify = (): void => {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  };

  constructor(private readonly options: PieceSenderOptions) {
    options.call.on("drain", this.notify);
    options.signal.addEventListener("abort", this.notify);
  }

  dispose(): void {
    this.options.call.off("drain", this.notify);
    this.options.signal.removeEventListener("abort", this.notify);
  }

  /** Streams consecutive pieces, whose bytes `source` yields back to back, as chunk messages. */
  async sendPieces(pieces: readonly PieceLength[], source: AsyncIterable<Uint8Array>): Promise<void> {
    let current = 0;
    let offset = 0;
    let chunk: ChunkMessage | undefined;
    let buffer: Buffer | undefined;
    let filled = 0;
    try {
      for await (const bytes of source) {
        let position = 0;
        while (position < bytes.byteLength) {
          if (chunk === undefined) {
            const piece = pieces[current];
            if (piece === undefined) throw new Error("the store returned more bytes than the pieces hold");
            buffer = this.options.pool.take();
            // Store chunks are copied straight into the encoded message: one copy per byte here.
            chunk = chunkMessageIn(buffer, piece.index, offset, Math.min(MESSAGE_DATA_BYTES, piece.length - offset));
            filled = 0;
          }
          const take = Math.min(bytes.byteLength - position, chunk.data.byteLength - filled);
          chunk.data.set(bytes.subarray(position, position + take), filled);
          position += take;
          filled += take;
          if (filled === chunk.data.byteLength && buffer !== undefined) {
            const message = chunk.message;
            const owner = buffer;
            chunk = undefined;
            buffer = undefined;
            await this.send(message, owner, filled);
            offset += filled;
            if (offset === pieces[current]?.length) {
              current++;
              offset = 0;
            }
          }
        }
      }
    } finally {
      if (buffer !== undefined) this.options.pool.give(buffer);
    }
    if (chunk !== undefined || current !== pieces.length) throw new Error("the store returned fewer bytes than the pieces hold");
  }

  private async send(message: Buffer, owner: Buffer, dataBytes: number): Promise<void> {
    const { call, signal, bucket, onSent, pool } = this.options;
    try {
      if (bucket !== undefined) await bucket.take(dataBytes, signal);
      signal.throwIfAborted();
    } catch (error: unknown) {
      pool.give(owner);
      throw error;
    }
    this.queued++;
    call.write(message, (error?: Error | null) => {
      this.queued--;
      pool.give(owner);
      if (error == null) onSent?.(dataBytes);
      this.notify();
    });
    // Never read ahead of what the call accepts: wait for 'drain' after write() said no, and keep at
    // most MAX_QUEUED_MESSAGES unflushed in any case.
    while (!signal.aborted && (call.writableNeedDrain || this.queued >= MAX_QUEUED_MESSAGES)) {
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
    signal.throwIfAborted();
  }
}
