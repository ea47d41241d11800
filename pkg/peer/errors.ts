export type PeerErrorCode =
  | "ERR_PEER_UNAVAILABLE"
  | "ERR_PEER_BUSY"
  | "ERR_PEER_MISSING_PIECE"
  | "ERR_PEER_PROTOCOL"
  | "ERR_PEER_BAD_PIECE"
  | "ERR_PEER_TIMEOUT"
  | "ERR_PEER_INVALID_ARGUMENT"
  /** The caller's AbortSignal fired; `cause` is the signal's reason. Not the peer's fault. */
  | "ERR_PEER_ABORTED";

export class PeerError extends Error {
  override readonly name = "PeerError";
  constructor(
    readonly code: PeerErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isPeerError(error: unknown, code?: PeerErrorCode): error is PeerError {
  return error instanceof PeerError && (code === undefined || error.code === code);
}
