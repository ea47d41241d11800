import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type Digest, digestAlgorithm, digestHex } from "../oci/index.js";

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
