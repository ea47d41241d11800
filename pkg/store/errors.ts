export type StoreErrorCode =
  | "ERR_STORE_BLOB_NOT_FOUND"
  | "ERR_STORE_BLOB_EXISTS"
  | "ERR_STORE_CONFLICT"
  | "ERR_STORE_DIGEST_MISMATCH"
  | "ERR_STORE_INCOMPLETE"
  | "ERR_STORE_INVALID_ARGUMENT"
  | "ERR_STORE_QUOTA_EXCEEDED"
  | "ERR_STORE_ABORTED"
  | "ERR_STORE_CLOSED"
  | "ERR_STORE_IO";

export class StoreError extends Error {
  override readonly name = "StoreError";
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isStoreError(error: unknown, code?: StoreErrorCode): error is StoreError {
  return error instanceof StoreError && (code === undefined || error.code === code);
}
