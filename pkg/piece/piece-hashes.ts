import { createHash, type Hash } from "node:crypto";
import { pieceCount } from "./piece.js";

/** A piece hash is the SHA-256 of the piece's bytes. */
export const PIECE_HASH_BYTES = 32;

/** SHA-256 of `bytes` (a piece), as the 32 bytes every holder announces and every receiver checks. */
export function sha256Of(bytes: Uint8Array): Buffer {
  return createHash("sha256").update(bytes).digest();
}

/** Whether two piece hashes are equal (both 32 bytes). */
export function sameHash(a: Uint8Array, b: Uint8Array): boolean {
  return (
    a.byteLength === b.byteLength &&
    Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
  );
}

/** The hashes of every piece, in order, as one buffer (what stores persist). */
export function packPieceHashes(hashes: readonly Uint8Array[]): Buffer {
  const packed = Buffer.allocUnsafe(hashes.length * PIECE_HASH_BYTES);
  hashes.forEach((hash, index) => {
    if (hash.byteLength !== PIECE_HASH_BYTES)
      throw new RangeError(`piece ${index}: a hash has ${PIECE_HASH_BYTES} bytes, not ${hash.byteLength}`);
    packed.set(hash, index * PIECE_HASH_BYTES);
  });
  return packed;
}

/** The inverse of packPieceHashes (views into `packed`); undefined when `packed` does not hold exactly `count` hashes. */
export function unpackPieceHashes(packed: Uint8Array, count: number): Uint8Array[] | undefined {
  if (packed.byteLength !== count * PIECE_HASH_BYTES) return undefined;
  return Array.from({ length: count }, (_, i) => packed.subarray(i * PIECE_HASH_BYTES, (i + 1) * PIECE_HASH_BYTES));
}

/**
 * Hashes the pieces of a blob from bytes written in order, so a writer that sees every byte anyway (the
 * origin stream) gets each piece's hash without reading anything back. Bytes must be fed at increasing
 * positions; a gap (bytes skipped, a resume in the middle of a piece) abandons the piece in progress and
 * hashing starts again at the next piece boundary. Pieces it could not hash are simply not reported.
 */
export class SequentialPieceHasher {
  private readonly count: number;
  /** Byte position the next fed byte must have for the piece in progress to continue. */
  private position = 0;
  private hash: Hash | undefined;

  constructor(
    private readonly size: number,
    private readonly pieceSize: number,
    private readonly onPiece: (index: number, sha256: Buffer) => void,
  ) {
    this.count = pieceCount(size, pieceSize);
  }

  update(position: number, bytes: Uint8Array): void {
    let offset = 0;
    if (position !== this.position || this.hash === undefined) {
      // Restart at the first piece boundary at or after `position`.
      const boundary = Math.ceil(position / this.pieceSize) * this.pieceSize;
      offset = boundary - position;
      this.position = boundary;
      this.hash = undefined;
    }
    while (offset < bytes.byteLength && this.position < this.size) {
      const index = Math.floor(this.position / this.pieceSize);
      const pieceEnd = Math.min((index + 1) * this.pieceSize, this.size);
      this.hash ??= createHash("sha256");
      const take = Math.min(bytes.byteLength - offset, pieceEnd - this.position);
      this.hash.update(bytes.subarray(offset, offset + take));
      offset += take;
      this.position += take;
      if (this.position === pieceEnd) {
        const digest = this.hash.digest();
        this.hash = undefined;
        if (index < this.count) this.onPiece(index, digest);
      }
    }
  }
}
