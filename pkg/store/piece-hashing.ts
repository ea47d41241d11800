import { createHash } from "node:crypto";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { pieceCount, pieceSpan } from "../piece/index.js";
import type { BlobReader, PieceHashList } from "./blob-store.js";
import { HASH_CHUNK_BYTES } from "./partial-core.js";

export interface HashPiecesOptions {
  readonly signal?: AbortSignal | undefined;
  /**
   * Awaited before each chunk of `bytes` is read: a CPU budget (a token bucket) for hashing that runs
   * in the background. Not called when absent.
   */
  readonly pace?: ((bytes: number, signal: AbortSignal | undefined) => Promise<void>) | undefined;
}

/**
 * The SHA-256 of every piece of a complete blob, read through `reader` in ~1 MiB chunks into one reused
 * buffer. It yields to the event loop between pieces: it runs beside requests being served.
 */
export async function hashPieces(reader: BlobReader, pieceSize: number, options: HashPiecesOptions = {}): Promise<PieceHashList> {
  const { signal, pace } = options;
  const hashes: Uint8Array[] = [];
  const chunk = Buffer.allocUnsafe(Math.min(HASH_CHUNK_BYTES, Math.max(reader.size, 1)));
  for (let index = 0; index < pieceCount(reader.size, pieceSize); index++) {
    const { start, end } = pieceSpan(index, reader.size, pieceSize);
    const hash = createHash("sha256");
    for (let position = start; position < end;) {
      signal?.throwIfAborted();
      const bytes = chunk.subarray(0, Math.min(chunk.byteLength, end - position));
      if (pace !== undefined) await pace(bytes.byteLength, signal);
      await reader.read(bytes, position);
      hash.update(bytes);
      position += bytes.byteLength;
    }
    hashes.push(hash.digest());
    await yieldToEventLoop();
  }
  return { pieceSize, hashes };
}
