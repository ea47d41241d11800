import type { ReadPiecesResponse } from "../gen/peer/v1/peer.js";
import { PeerError } from "./errors.js";
import type { ReceivedPiece } from "./piece-source.js";

/**
 * Turns the chunk messages of one ReadPieces call back into whole pieces, checking that the peer sends
 * exactly what was asked: the requested pieces in request order, each as consecutive non-empty chunks
 * from offset 0. Anything else is ERR_PEER_PROTOCOL.
 *
 * The client does not know the blob's size, so a piece shorter than the piece size is accepted once, as
 * the blob's last piece, when the next piece starts or the stream ends; nothing after it in the blob may
 * follow. Its content is checked against its hash by the scheduler like every other piece.
 */
export class PieceAssembler {
  /** Position in the request of the piece being received. */
  private next = 0;
  private received = 0;
  private parts: Buffer[] = [];
  /** Index of a short piece seen (the blob's last), if any. */
  private shortPiece: number | undefined;

  constructor(
    private readonly pieces: readonly number[],
    private readonly pieceSize: number,
    private readonly peerAddress: string,
  ) {}

  /** Feeds one chunk; returns the pieces it completed (zero, one, or two when a short piece ends). */
  push(chunk: ReadPiecesResponse): ReceivedPiece[] {
    const done: ReceivedPiece[] = [];
    if (this.received > 0 && chunk.piece !== this.current()) {
      // The next piece begins: the one in progress was short.
      done.push(this.finishShort());
    }
    const expected = this.current();
    if (expected === undefined) throw this.protocol(`sent piece ${chunk.piece} after the ${this.pieces.length} requested`);
    if (chunk.piece !== expected) throw this.protocol(`sent piece ${chunk.piece}, expected ${expected}`);
    if (chunk.offset !== this.received) throw this.protocol(`sent offset ${chunk.offset} of piece ${expected}, expected ${this.received}`);
    if (chunk.data.byteLength === 0) throw this.protocol(`sent an empty chunk of piece ${expected}`);
    if (this.received + chunk.data.byteLength > this.pieceSize) throw this.protocol(`sent more than ${this.pieceSize} bytes of piece ${expected}`);
    if (this.shortPiece !== undefined && expected > this.shortPiece) {
      throw this.protocol(`sent piece ${expected} after piece ${this.shortPiece}, which was short and so the blob's last`);
    }
    this.parts.push(chunk.data);
    this.received += chunk.data.byteLength;
    if (this.received === this.pieceSize) done.push(this.take(expected));
    return done;
  }

  /** The stream ended with OK: returns the short last piece if one was in progress; throws if pieces are missing. */
  end(): ReceivedPiece[] {
    const done = this.received > 0 ? [this.finishShort()] : [];
    if (this.next !== this.pieces.length) throw this.protocol(`ended the stream after ${this.next} of ${this.pieces.length} pieces`);
    return done;
  }

  private current(): number | undefined {
    return this.pieces[this.next];
  }

  private finishShort(): ReceivedPiece {
    const index = this.current();
    if (index === undefined) throw this.protocol("sent data after the last requested piece");
    if (this.shortPiece !== undefined && this.shortPiece !== index) {
      throw this.protocol(`sent short pieces ${this.shortPiece} and ${index}; only the blob's last piece may be short`);
    }
    this.shortPiece = index;
    return this.take(index);
  }

  private take(index: number): ReceivedPiece {
    // One chunk per piece (1 MiB pieces) is handed on without a copy; larger pieces are joined once.
    const data = this.parts.length === 1 && this.parts[0] !== undefined ? this.parts[0] : Buffer.concat(this.parts, this.received);
    this.parts = [];
    this.received = 0;
    this.next++;
    return { index, data };
  }

  private protocol(message: string): PeerError {
    return new PeerError("ERR_PEER_PROTOCOL", `peer ${this.peerAddress} ${message}`);
  }
}
