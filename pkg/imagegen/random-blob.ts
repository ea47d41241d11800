import { mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import { BlobWriter, type WrittenBlob } from "./blob-writer.js";
import { ImagegenError } from "./errors.js";
import { Keystream } from "./keystream.js";

export interface WriteRandomBlobOptions {
  /** Destination file; its directory is created if missing. Written via a temp file and rename. */
  readonly file: string;
  readonly seed: string;
  readonly bytes: number;
  readonly signal?: AbortSignal;
}

// Distinct from every layer label, so a blob never equals a layer's data by accident.
const BLOB_LABEL = "blob";

/**
 * Writes `bytes` deterministic incompressible bytes (same seed ⇒ same content) and returns the
 * sha256 digest. Meant for mirror benchmarks that push single large blobs.
 */
export async function writeRandomBlob(options: WriteRandomBlobOptions): Promise<WrittenBlob> {
  if (!Number.isSafeInteger(options.bytes) || options.bytes < 0) {
    throw new ImagegenError("ERR_IMAGEGEN_INVALID_OPTIONS", `bytes must be a non-negative integer, got ${options.bytes}`);
  }
  const directory = dirname(options.file);
  try {
    await mkdir(directory, { recursive: true });
  } catch (cause) {
    throw new ImagegenError("ERR_IMAGEGEN_IO", `cannot create ${directory}`, { cause });
  }
  const writer = await BlobWriter.open(directory, options.signal);
  try {
    for (const chunk of new Keystream(options.seed, BLOB_LABEL).chunks(options.bytes)) await writer.write(chunk);
    return await writer.commit(() => options.file);
  } finally {
    await writer.discard();
  }
}

/** The same bytes writeRandomBlob writes, as chunks, for callers that stream them elsewhere (an HTTP body, a store). */
export function randomBlobChunks(seed: string, bytes: number, chunkBytes?: number): Generator<Buffer, void, undefined> {
  return new Keystream(seed, BLOB_LABEL).chunks(bytes, chunkBytes);
}
