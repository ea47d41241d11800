import { OciError } from "./errors.js";

/** A satisfiable byte range, `end` inclusive as in HTTP. */
export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

/**
 * Parses a single-range `Range` header against a resource of `size` bytes (RFC 9110 §14.1.2):
 * `bytes=a-b`, `bytes=a-` and `bytes=-n`. Returns undefined for no header.
 * Throws ERR_OCI_RANGE_INVALID for malformed, multi-range or unsatisfiable ranges; the
 * registry answers those with 416 and `Content-Range: bytes *\/size`.
 */
export function parseRangeHeader(header: string | undefined, size: number): ByteRange | undefined {
  if (header === undefined) return undefined;
  const match = /^bytes=(\d{0,15})-(\d{0,15})$/.exec(header.trim());
  if (!match) throw new OciError("ERR_OCI_RANGE_INVALID", "malformed or multi-part Range header");
  const [, first = "", last = ""] = match;
  let start: number;
  let end: number;
  if (first === "" && last === "") throw new OciError("ERR_OCI_RANGE_INVALID", "malformed Range header");
  if (first === "") {
    const suffix = Number(last);
    if (suffix === 0) throw new OciError("ERR_OCI_RANGE_INVALID", "empty suffix range");
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(first);
    end = last === "" ? size - 1 : Math.min(Number(last), size - 1);
    if (last !== "" && Number(last) < start) throw new OciError("ERR_OCI_RANGE_INVALID", "range end before start");
  }
  if (start >= size || size === 0) throw new OciError("ERR_OCI_RANGE_INVALID", `range not satisfiable for ${size} bytes`);
  return { start, end };
}
