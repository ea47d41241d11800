/** Smallest and largest piece sizes (1–16 MiB: a blob has at most a few thousand pieces). */
export const MIN_PIECE_SIZE_BYTES = 1024 * 1024;
export const MAX_PIECE_SIZE_BYTES = 16 * 1024 * 1024;
/** A blob is cut into at most about this many pieces, so bitmaps and hash lists stay small. */
export const TARGET_MAX_PIECES = 2048;

/** The piece size for a blob: the smallest power of two in [1, 16] MiB giving at most TARGET_MAX_PIECES pieces. */
export function choosePieceSize(blobSize: number): number {
  let pieceSize = MIN_PIECE_SIZE_BYTES;
  while (pieceSize < MAX_PIECE_SIZE_BYTES && Math.ceil(blobSize / pieceSize) > TARGET_MAX_PIECES) pieceSize *= 2;
  return pieceSize;
}

export function pieceCount(blobSize: number, pieceSize: number): number {
  return blobSize === 0 ? 0 : Math.ceil(blobSize / pieceSize);
}

/** Byte span [start, end) of piece `index`. */
export function pieceSpan(index: number, blobSize: number, pieceSize: number): { start: number; end: number } {
  const start = index * pieceSize;
  return { start, end: Math.min(start + pieceSize, blobSize) };
}
