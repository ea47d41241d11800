import { createCipheriv, createHash } from "node:crypto";
import { type Digest, createDigestHash, parseDigest } from "../../oci/index.js";

/** Bytes a fake serves: a size and a way to produce any byte range of them on demand. */
export interface BodySource {
  readonly size: number;
  /** Yields the bytes in [start, endExclusive) as fresh buffers the caller may keep or hand to a socket. */
  chunks(start: number, endExclusive: number): Iterable<Uint8Array>;
}

/** Deterministic pseudo-random content of `size` bytes, generated on the fly and never held in memory. */
export interface SeededContent {
  readonly size: number;
  readonly seed: string;
}

/** Size of the pieces a source yields; large enough to keep per-chunk overhead low, small enough to stream. */
export const CONTENT_CHUNK_BYTES = 64 * 1024;
const AES_BLOCK_BYTES = 16;
/** How much hashing digestOfSeeded does before yielding to the event loop, so other servers keep serving. */
const HASH_YIELD_EVERY_BYTES = 8 * 1024 * 1024;

// AES-256-CTR encrypting zeros is a fast, seekable keystream: byte i depends only on the key and i.
const zeros = Buffer.alloc(CONTENT_CHUNK_BYTES + AES_BLOCK_BYTES);

export function bytesSource(bytes: Uint8Array): BodySource {
  return {
    size: bytes.byteLength,
    *chunks(start, endExclusive) {
      for (let at = start; at < endExclusive; at += CONTENT_CHUNK_BYTES) {
        yield Buffer.from(bytes.subarray(at, Math.min(endExclusive, at + CONTENT_CHUNK_BYTES)));
      }
    },
  };
}

export function seededSource(content: SeededContent): BodySource {
  return { size: content.size, chunks: (start, endExclusive) => seededChunks(content.seed, start, endExclusive) };
}

/** The keystream of `seed` over [start, endExclusive), in pieces of at most CONTENT_CHUNK_BYTES. */
export function* seededChunks(seed: string, start: number, endExclusive: number): Generator<Buffer> {
  const key = createHash("sha256").update(seed).digest();
  const firstBlock = Math.floor(start / AES_BLOCK_BYTES);
  // CTR mode treats the whole IV as a big-endian counter, so the IV of block n is simply n.
  const iv = Buffer.alloc(AES_BLOCK_BYTES);
  iv.writeBigUInt64BE(BigInt(firstBlock), AES_BLOCK_BYTES - 8);
  const cipher = createCipheriv("aes-256-ctr", key, iv);
  let skip = start - firstBlock * AES_BLOCK_BYTES;
  for (let at = start; at < endExclusive;) {
    const length = Math.min(CONTENT_CHUNK_BYTES, endExclusive - at);
    const out = cipher.update(zeros.subarray(0, length + skip));
    yield skip === 0 ? out : out.subarray(skip);
    skip = 0;
    at += length;
  }
}

/** A small slice of seeded content, for tests that compare what a client received. */
export function seededBytes(seed: string, start: number, length: number): Buffer {
  return Buffer.concat([...seededChunks(seed, start, start + length)]);
}

// Several fakes in one test process often share one big blob; hash it once.
const seededDigests = new Map<string, Promise<Digest>>();

/** sha256 of seeded content, computed by streaming it (memoised per seed and size). */
export function digestOfSeeded(content: SeededContent): Promise<Digest> {
  const key = `${String(content.size)}:${content.seed}`;
  let digest = seededDigests.get(key);
  if (digest === undefined) {
    digest = hashSeeded(content);
    seededDigests.set(key, digest);
  }
  return digest;
}

async function hashSeeded(content: SeededContent): Promise<Digest> {
  const hash = createDigestHash("sha256");
  let sinceYield = 0;
  for (const chunk of seededChunks(content.seed, 0, content.size)) {
    hash.update(chunk);
    sinceYield += chunk.byteLength;
    if (sinceYield >= HASH_YIELD_EVERY_BYTES) {
      sinceYield = 0;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
  return parseDigest(`sha256:${hash.digest("hex")}`);
}
