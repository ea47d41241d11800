import { MAX_PIECE_SIZE_BYTES, MIN_PIECE_SIZE_BYTES, PIECE_HASH_BYTES, pieceCount } from "../piece/index.js";
import type { PublishedPieceHashes } from "./partial-backend.js";

/** Bytes before the hashes: the piece size, a big-endian uint32. */
const HEADER_BYTES = 4;

/** The `.pieces` sidecar of a blob: its piece size, then the SHA-256 of every piece in order. */
export function encodePieceHashFile(hashes: PublishedPieceHashes): Buffer {
  const file = Buffer.allocUnsafe(HEADER_BYTES + hashes.packed.byteLength);
  file.writeUInt32BE(hashes.pieceSize, 0);
  file.set(hashes.packed, HEADER_BYTES);
  return file;
}

/** Parses a `.pieces` sidecar of a blob of `blobSize` bytes; undefined for anything inconsistent. */
export function decodePieceHashFile(file: Uint8Array, blobSize: number): PublishedPieceHashes | undefined {
  if (file.byteLength < HEADER_BYTES) return undefined;
  const pieceSize = Buffer.from(file.buffer, file.byteOffset, file.byteLength).readUInt32BE(0);
  if (pieceSize < MIN_PIECE_SIZE_BYTES || pieceSize > MAX_PIECE_SIZE_BYTES) return undefined;
  const packed = file.subarray(HEADER_BYTES);
  if (packed.byteLength !== pieceCount(blobSize, pieceSize) * PIECE_HASH_BYTES) return undefined;
  return { pieceSize, packed };
}

/** The largest sidecar a blob of `blobSize` bytes can have (read limit). */
export function maxPieceHashFileBytes(blobSize: number): number {
  return HEADER_BYTES + pieceCount(blobSize, MIN_PIECE_SIZE_BYTES) * PIECE_HASH_BYTES;
}
