/** Stable codes for everything pkg/oci rejects. The registry maps them to OCI error bodies. */
export type OciErrorCode =
  | "ERR_OCI_DIGEST_INVALID"
  | "ERR_OCI_DIGEST_UNSUPPORTED"
  | "ERR_OCI_NAME_INVALID"
  | "ERR_OCI_TAG_INVALID"
  | "ERR_OCI_REGISTRY_INVALID"
  | "ERR_OCI_PATH_INVALID"
  | "ERR_OCI_RANGE_INVALID"
  | "ERR_OCI_PLATFORM_INVALID";

export class OciError extends Error {
  override readonly name = "OciError";
  constructor(
    readonly code: OciErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
