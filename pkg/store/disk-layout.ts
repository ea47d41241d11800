import { type FileHandle, open } from "node:fs/promises";
import { join } from "node:path";
import { digestAlgorithm, type DigestAlgorithm, digestHex, type Digest } from "../oci/index.js";
import { StoreError } from "./errors.js";

export const DIGEST_ALGORITHMS: readonly DigestAlgorithm[] = ["sha256", "sha512"];
export const META_SUFFIX = ".meta";
export const DATA_SUFFIX = ".data";
export const STATE_SUFFIX = ".state";
export const PIECES_SUFFIX = ".pieces";

/**
 * Paths of the disk store. Every file name is derived from digestHex() of a validated digest (lowercase hex
 * only), never from caller-supplied text, so no name can leave the store directory.
 *
 *   blobs/<alg>/<hex>          complete, verified blobs
 *   blobs/<alg>/<hex>.meta     {"mediaType": …}, only when the blob has one
 *   blobs/<alg>/<hex>.pieces   piece size and the SHA-256 of every piece (piece-hash-file.ts)
 *   partial/<alg>/<hex>.data   sparse file of the blob's size
 *   partial/<alg>/<hex>.state  JSON: size, pieceSize, appendOffset, bitmap, mediaType
 *   tmp/                       files being written; emptied at start-up
 */
export class DiskLayout {
  readonly blobsDir: string;
  readonly partialDir: string;
  readonly tmpDir: string;

  constructor(readonly root: string) {
    this.blobsDir = join(root, "blobs");
    this.partialDir = join(root, "partial");
    this.tmpDir = join(root, "tmp");
  }

  blobDir(algorithm: DigestAlgorithm): string {
    return join(this.blobsDir, algorithm);
  }

  partialAlgorithmDir(algorithm: DigestAlgorithm): string {
    return join(this.partialDir, algorithm);
  }

  blobPath(digest: Digest): string {
    return join(this.blobDir(digestAlgorithm(digest)), digestHex(digest));
  }

  metaPath(digest: Digest): string {
    return this.blobPath(digest) + META_SUFFIX;
  }

  piecesPath(digest: Digest): string {
    return this.blobPath(digest) + PIECES_SUFFIX;
  }

  partialDataPath(digest: Digest): string {
    return join(this.partialAlgorithmDir(digestAlgorithm(digest)), digestHex(digest) + DATA_SUFFIX);
  }

  partialStatePath(digest: Digest): string {
    return join(this.partialAlgorithmDir(digestAlgorithm(digest)), digestHex(digest) + STATE_SUFFIX);
  }
}

/** Flushes a directory's entries (a rename or a new file in it) to disk. */
export async function fsyncDir(path: string): Promise<void> {
  const handle = await open(path, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Reads exactly `length` bytes at `position`; a short file is an error, not a short chunk. */
export async function readExactly(handle: FileHandle, position: number, length: number): Promise<Uint8Array> {
  const buffer = Buffer.allocUnsafe(length);
  await readExactlyInto(handle, buffer, position);
  return buffer;
}

/** Fills `target` with the bytes at `position` (no allocation: callers reuse their buffers). */
export async function readExactlyInto(handle: FileHandle, target: Uint8Array, position: number): Promise<void> {
  const length = target.byteLength;
  let filled = 0;
  while (filled < length) {
    const { bytesRead } = await handle.read(target, filled, length - filled, position + filled);
    if (bytesRead === 0)
      throw new StoreError("ERR_STORE_IO", `file ended at ${position + filled}, expected ${length} bytes from ${position}`);
    filled += bytesRead;
  }
}

/** Writes all of `data` at `position`. */
export async function writeFully(handle: FileHandle, position: number, data: Uint8Array): Promise<void> {
  let written = 0;
  while (written < data.byteLength) {
    const { bytesWritten } = await handle.write(data, written, data.byteLength - written, position + written);
    written += bytesWritten;
  }
}
