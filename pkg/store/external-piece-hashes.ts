import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "pino";
import { type Digest, digestAlgorithm, digestHex, isDigest } from "../oci/index.js";
import { choosePieceSize, packPieceHashes, PIECE_HASH_BYTES, pieceCount, unpackPieceHashes } from "../piece/index.js";
import type { PieceHashList } from "./blob-store.js";
import { writeFileAtomic } from "../util/index.js";
import { DIGEST_ALGORITHMS } from "./disk-layout.js";
import type { ExternalBlob } from "./external-source.js";
import { decodePieceHashFile, encodePieceHashFile, maxPieceHashFileBytes } from "./piece-hash-file.js";
import { errnoCode } from "./store-helpers.js";

/**
 * Piece hashes of external blobs kept in memory, at most this many hash bytes (32 per piece: 8 MiB covers
 * 256 GiB of blobs at 1 MiB pieces). Beyond it the least recently used are read back from disk.
 */
export const MAX_MEMORY_HASH_BYTES = 8 * 1024 * 1024;

export interface ExternalPieceHashesOptions {
  /** Directory the hashes are kept in across restarts (in the agent's data dir); memory only when undefined. */
  readonly dir?: string | undefined;
  readonly logger?: Logger | undefined;
  readonly maxMemoryHashBytes?: number | undefined;
}

/**
 * The piece hashes of blobs held by an external source (containerd's content store), which records none:
 * computed once per blob (or handed over from the agent's own store when it drops its copy), then kept in
 * `dir/<alg>/<hex>` in the `.pieces` sidecar format, so an agent restart re-announces without hashing.
 * Files of blobs the source no longer holds are removed (`forget`, `retainOnly`), so the directory holds
 * 32 bytes per MiB of the source's content at most.
 */
export class ExternalPieceHashes {
  private readonly memory = new Map<Digest, PieceHashList>();
  private memoryBytes = 0;
  private readonly maxMemoryBytes: number;

  private constructor(private readonly options: ExternalPieceHashesOptions) {
    this.maxMemoryBytes = options.maxMemoryHashBytes ?? MAX_MEMORY_HASH_BYTES;
  }

  static async open(options: ExternalPieceHashesOptions = {}): Promise<ExternalPieceHashes> {
    const cache = new ExternalPieceHashes(options);
    if (options.dir !== undefined) {
      for (const algorithm of DIGEST_ALGORITHMS) await mkdir(join(options.dir, algorithm), { recursive: true });
      // Files being written when an earlier process stopped.
      await rm(cache.tmpDir, { recursive: true, force: true });
      await mkdir(cache.tmpDir, { recursive: true });
    }
    return cache;
  }

  /** The recorded hashes for the blob's standard piece size, or undefined. */
  async get(blob: ExternalBlob): Promise<PieceHashList | undefined> {
    const pieceSize = choosePieceSize(blob.size);
    const cached = this.memory.get(blob.digest);
    if (cached !== undefined && cached.pieceSize === pieceSize && cached.hashes.length === pieceCount(blob.size, pieceSize)) {
      // Most recently used last.
      this.memory.delete(blob.digest);
      this.memory.set(blob.digest, cached);
      return cached;
    }
    const { dir } = this.options;
    if (dir === undefined) return undefined;
    let file: Buffer;
    try {
      file = await readFile(this.path(blob.digest));
    } catch (error: unknown) {
      if (errnoCode(error) !== "ENOENT")
        this.options.logger?.warn({ err: error, digest: blob.digest }, "unreadable piece hashes; computing them again");
      return undefined;
    }
    const decoded = file.byteLength <= maxPieceHashFileBytes(blob.size) ? decodePieceHashFile(file, blob.size) : undefined;
    const hashes = decoded?.pieceSize === pieceSize ? unpackPieceHashes(decoded.packed, pieceCount(blob.size, pieceSize)) : undefined;
    if (hashes === undefined) return undefined;
    const list = { pieceSize, hashes };
    this.remember(blob.digest, list);
    return list;
  }

  /** Records hashes (computed, or handed over by the agent's store). A failed write is logged: memory still has them. */
  async put(blob: ExternalBlob, list: PieceHashList): Promise<void> {
    this.remember(blob.digest, list);
    const { dir } = this.options;
    if (dir === undefined) return;
    try {
      await writeFileAtomic(
        this.path(blob.digest),
        encodePieceHashFile({ pieceSize: list.pieceSize, packed: packPieceHashes(list.hashes) }),
        {
          tmpDir: this.tmpDir,
          syncDir: false,
        },
      );
    } catch (error: unknown) {
      this.options.logger?.warn(
        { err: error, digest: blob.digest },
        "could not record piece hashes; they will be computed again after a restart",
      );
    }
  }

  /** Drops a blob the source no longer holds. */
  async forget(digest: Digest): Promise<void> {
    this.drop(digest);
    if (this.options.dir !== undefined) await rm(this.path(digest), { force: true });
  }

  /** Removes the records of every blob not in `held` (after the source's first complete listing). */
  async retainOnly(held: ReadonlySet<Digest>): Promise<number> {
    for (const digest of [...this.memory.keys()]) if (!held.has(digest)) this.drop(digest);
    const { dir } = this.options;
    if (dir === undefined) return 0;
    let removed = 0;
    for (const algorithm of DIGEST_ALGORITHMS) {
      for (const name of await readdir(join(dir, algorithm))) {
        const digest = `${algorithm}:${name}`;
        if (isDigest(digest) && held.has(digest)) continue;
        await rm(join(dir, algorithm, name), { recursive: true, force: true });
        removed++;
      }
    }
    return removed;
  }

  private get tmpDir(): string {
    return join(this.options.dir ?? "", "tmp");
  }

  private path(digest: Digest): string {
    return join(this.options.dir ?? "", digestAlgorithm(digest), digestHex(digest));
  }

  private remember(digest: Digest, list: PieceHashList): void {
    this.drop(digest);
    this.memory.set(digest, list);
    this.memoryBytes += hashBytes(list);
    for (const [oldest, old] of this.memory) {
      if (this.memoryBytes <= this.maxMemoryBytes || oldest === digest) break;
      this.memory.delete(oldest);
      this.memoryBytes -= hashBytes(old);
    }
  }

  private drop(digest: Digest): void {
    const old = this.memory.get(digest);
    if (old === undefined) return;
    this.memory.delete(digest);
    this.memoryBytes -= hashBytes(old);
  }
}

function hashBytes(list: PieceHashList): number {
  return list.hashes.length * PIECE_HASH_BYTES;
}
