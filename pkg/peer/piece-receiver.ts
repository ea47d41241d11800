import { createHash, type Hash } from "node:crypto";
import { PeerError } from "./errors.js";
import type { ReceivedPiece } from "./piece-source.js";
import type { BufferPool } from "./buffer-pool.js";
import type { ChunkSink } from "./wire-codec.js";

/**
 * Turns the decoded chunks of one ReadPieces call into whole pieces, checking that the peer sends exactly
 * what was asked: the requested pieces in request order, each as consecutive non-empty chunks from
 * offset 0. Anything else is ERR_PEER_PROTOCOL. Each piece's bytes are copied into a pooled buffer and
 * hashed as they arrive, so the consumer gets the piece with its SHA-256 and no second pass.
 *
 * The client does not know the blob's size, so a piece shorter than the piece size is accepted once, as
 * the blob's last piece, when the next piece starts or the stream ends; nothing after it in the blob may
 * follow. Its content is checked against its hash by the scheduler like every other piece.
 */
export class PieceReceiver implements ChunkSink {
  /** Position in the request of the piece being received. */
  private next = 0;
  private received = 0;
  /** Data bytes still to come of the current message. */
  private messageRemaining = 0;
  private buffer: Buffer | undefined;
  private hash: Hash | undefined;
  /** Index of a short piece seen (the blob's last), if any. */
  private shortPiece: number | undefined;
  /** Pieces completed and not yet taken by the consumer. */
  private readonly done: ReceivedPiece[] = [];

  constructor(
    private readonly pieces: readonly number[],
    private readonly pieceSize: number,
    private readonly pool: BufferPool,
    private readonly peerAddress: string,
    /** Called with the piece bytes of every chunk as it arrives (the received-bytes counter). */
    private readonly onBytes?: (bytes: number) => void,
  ) {}

  /** The next completed piece, handed over to the caller (who must release it). */
  shift(): ReceivedPiece | undefined {
    return this.done.shift();
  }

  get pending(): number {
    return this.done.length;
  }

  onChunkStart(piece: number, offset: number, length: number): void {
    if (this.messageRemaining !== 0) throw this.protocol("started a message before the previous one's data ended");
    if (this.received > 0 && piece !== this.current()) {
      // The next piece begins: the one in progress was short.
      this.finishShort();
    }
    const expected = this.current();
    if (expected === undefined) throw this.protocol(`sent piece ${piece} after the ${this.pieces.length} requested`);
    if (piece !== expected) throw this.protocol(`sent piece ${piece}, expected ${expected}`);
    if (offset !== this.received) throw this.protocol(`sent offset ${offset} of piece ${expected}, expected ${this.received}`);
    if (length === 0) throw this.protocol(`sent an empty chunk of piece ${expected}`);
    if (this.received + length > this.pieceSize) throw this.protocol(`sent more than ${this.pieceSize} bytes of piece ${expected}`);
    if (this.shortPiece !== undefined && expected > this.shortPiece) {
      throw this.protocol(`sent piece ${expected} after piece ${this.shortPiece}, which was short and so the blob's last`);
    }
    this.buffer ??= this.pool.take(this.pieceSize);
    this.hash ??= createHash("sha256");
    this.messageRemaining = length;
  }

  onChunkData(bytes: Buffer): void {
    const buffer = this.buffer;
    const hash = this.hash;
    if (buffer === undefined || hash === undefined || bytes.byteLength > this.messageRemaining)
      throw this.protocol("sent data outside a chunk");
    buffer.set(bytes, this.received);
    hash.update(bytes);
    this.received += bytes.byteLength;
    this.messageRemaining -= bytes.byteLength;
    this.onBytes?.(bytes.byteLength);
    if (this.received === this.pieceSize) this.finish(this.pieces[this.next] ?? -1);
  }

  /** The stream ended with OK: finishes a short last piece in progress; throws if pieces are missing. */
  end(): void {
    if (this.messageRemaining !== 0) throw this.protocol("ended the stream inside a message");
    if (this.received > 0) this.finishShort();
    if (this.next !== this.pieces.length) throw this.protocol(`ended the stream after ${this.next} of ${this.pieces.length} pieces`);
  }

  /** Bytes never handed to the consumer: a piece still arriving, and whole pieces not taken (the call ended). */
  get undeliveredBytes(): number {
    return this.received + this.done.reduce((total, piece) => total + piece.data.length, 0);
  }

  /** Returns every buffer not handed over (the call failed or was cancelled). */
  dispose(): void {
    for (const piece of this.done.splice(0)) piece.release();
    if (this.buffer !== undefined) this.pool.give(this.buffer);
    this.buffer = undefined;
    this.hash = undefined;
  }

  private current(): number | undefined {
    return this.pieces[this.next];
  }

  private finishShort(): void {
    const index = this.current();
    if (index === undefined) throw this.protocol("sent data after the last requested piece");
    if (this.shortPiece !== undefined && this.shortPiece !== index) {
      throw this.protocol(`sent short pieces ${this.shortPiece} and ${index}; only the blob's last piece may be short`);
    }
    this.shortPiece = index;
    this.finish(index);
  }

  private finish(index: number): void {
    const buffer = this.buffer;
    const hash = this.hash;
    if (buffer === undefined || hash === undefined) throw this.protocol("finished a piece it never started");
    const length = this.received;
    this.buffer = undefined;
    this.hash = undefined;
    this.received = 0;
    this.next++;
    let released = false;
    this.done.push({
      index,
      data: buffer.subarray(0, length),
      sha256: hash.digest(),
      release: () => {
        if (released) return;
        released = true;
        this.pool.give(buffer);
      },
    });
  }

  private protocol(message: string): PeerError {
    return new PeerError("ERR_PEER_PROTOCOL", `peer ${this.peerAddress} ${message}`);
  }
}
