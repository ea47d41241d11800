export type ImagegenErrorCode =
  /** An option is missing, out of range or malformed (platform, tag, sizes). */
  | "ERR_IMAGEGEN_INVALID_OPTIONS"
  /** The caller's AbortSignal fired; nothing half-written is left under a digest name. */
  | "ERR_IMAGEGEN_ABORTED"
  /** Writing the layout or blob failed. */
  | "ERR_IMAGEGEN_IO"
  /** A tar header read back did not parse (bad checksum, bad octal field). */
  | "ERR_IMAGEGEN_TAR_INVALID";

export class ImagegenError extends Error {
  override readonly name = "ImagegenError";
  constructor(
    readonly code: ImagegenErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isImagegenError(error: unknown, code?: ImagegenErrorCode): error is ImagegenError {
  return error instanceof ImagegenError && (code === undefined || error.code === code);
}
