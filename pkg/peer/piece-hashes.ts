import { createHash } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type Digest, digestAlgorithm, digestHex } from "../oci/index.js";
import type { BlobStore } from "../store/blob-store.js";
import { pieceCount, pieceSpan } from "../piece/index.js";

export const PIECE_HASH_BYTES = 32;

/**
 * SHA-256 of every piece of the blobs this agent holds, kept on disk beside the store
 * (`<dir>/<alg>/<hex>`: the hashes concatenated), so that after a restart the agent re-announces its
 * blobs with their hashes and peers can verify what it serves. Written once a blob is complete.
 */
export class PieceHashIndex {
  private readonly cache = new Map<Digest, readonly Uint8Array[]>();

  constructor(private readonly dir: string) {}

  async get(digest: Digest): Promise<readonly Uint8Array[] | undefined> {
    const cached = this.cache.get(digest);
    if (cached) return cached;
    let bytes: Buffer;
    try {
      bytes = await readFile(this.path(digest));
    } catch {
      return undefined;
    }
    if (bytes.length % PIECE_HASH_BYTES !== 0) return undefined;
    const hashes = Array.from({ length: bytes.length / PIECE_HASH_BYTES }, (_, i) => bytes.subarray(i * PIECE_HASH_BYTES, (i + 1) * PIECE_HASH_BYTES));
    this.cache.set(digest, hashes);
    return hashes;
  }

  /** Persists the complete hash list of a blob (atomically: temp file, rename). */
  async put(digest: Digest, hashes: readonly Uint8Array[]): Promise<void> {
    const path = this.path(digest);
    await mkdir(join(this.dir, digestAlgorithm(digest)), { recursive: true });
    const temp = `${path}.tmp-${process.pid}`;
    await writeFile(temp, Buffer.concat(hashes.map((h) => Buffer.from(h))));
    await rename(temp, path);
    this.cache.set(digest, hashes);
  }

  async delete(digest: Digest): Promise<void> {
    this.cache.delete(digest);
    await rm(this.path(digest), { force: true });
  }

  private path(digest: Digest): string {
    return join(this.dir, digestAlgorithm(digest), digestHex(digest));
  }
}

/**
 * SHA-256 of the pieces of a complete stored blob, reading it piece by piece; entries already in
 * `known` are kept. For blobs that came without hashes (cached before, resumed after a restart, manifests).
 */
export async function hashStoredPieces(
  store: BlobStore,
  blob: { readonly digest: Digest; readonly size: number },
  pieceSize: number,
  signal: AbortSignal,
  known: readonly (Uint8Array | undefined)[] = [],
): Promise<Uint8Array[]> {
  const hashes: Uint8Array[] = [];
  for (let index = 0; index < pieceCount(blob.size, pieceSize); index++) {
    const existing = known[index];
    if (existing !== undefined) {
      hashes.push(existing);
      continue;
    }
    const { start, end } = pieceSpan(index, blob.size, pieceSize);
    const hash = createHash("sha256");
    for await (const chunk of (await store.createReadStream(blob.digest, { start, end: end - 1, signal })) as AsyncIterable<Buffer>) hash.update(chunk);
    hashes.push(hash.digest());
  }
  return hashes;
}
