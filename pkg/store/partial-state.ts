import type { Digest } from "../oci/index.js";
import { MAX_PIECE_SIZE_BYTES, pieceCount } from "../piece/index.js";
import { isValidMediaType } from "./store-helpers.js";

const STATE_VERSION = 1;
/** State files are tiny (a bitmap of a few thousand bits); anything bigger is not ours. */
export const MAX_STATE_FILE_BYTES = 64 * 1024;

/** A partial blob's persisted state (partial/<alg>/<hex>.state). */
export interface PartialStateRecord {
  readonly digest: Digest;
  readonly size: number;
  readonly pieceSize: number;
  readonly mediaType: string | undefined;
  readonly appendOffset: number;
  readonly bitmap: Uint8Array;
}

export function encodePartialState(state: PartialStateRecord): string {
  return JSON.stringify({
    version: STATE_VERSION,
    digest: state.digest,
    size: state.size,
    pieceSize: state.pieceSize,
    appendOffset: state.appendOffset,
    bitmap: Buffer.from(state.bitmap).toString("base64"),
    ...(state.mediaType === undefined ? {} : { mediaType: state.mediaType }),
  });
}

/** Parses and checks a state file; undefined for anything that is not a consistent state of `digest`. */
export function decodePartialState(text: string, digest: Digest): PartialStateRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const record = value as Record<string, unknown>;
  const { version, size, pieceSize, appendOffset, bitmap, mediaType } = record;
  if (version !== STATE_VERSION || record.digest !== digest) return undefined;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) return undefined;
  if (typeof pieceSize !== "number" || !Number.isSafeInteger(pieceSize) || pieceSize < 1 || pieceSize > MAX_PIECE_SIZE_BYTES)
    return undefined;
  if (typeof appendOffset !== "number" || !Number.isSafeInteger(appendOffset) || appendOffset < 0 || appendOffset > size) return undefined;
  if (typeof bitmap !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(bitmap)) return undefined;
  if (mediaType !== undefined && !isValidMediaType(mediaType)) return undefined;
  const bytes = new Uint8Array(Buffer.from(bitmap, "base64"));
  if (bytes.byteLength !== Math.ceil(pieceCount(size, pieceSize) / 8)) return undefined;
  return { digest, size, pieceSize, appendOffset, bitmap: bytes, mediaType };
}
