import { status } from "@grpc/grpc-js";
import { OciError } from "../oci/index.js";
import { isStoreError } from "../store/index.js";
import { PeerError, type PeerErrorCode } from "./errors.js";

// The one place where Shoal errors become gRPC statuses and back: errors are mapped at the edge.

/** A status the server ends a call with. */
export class PeerStatus extends Error {
  override readonly name = "PeerStatus";
  constructor(
    readonly code: status,
    readonly details: string,
    options?: { cause?: unknown },
  ) {
    super(details, options);
  }
}

/** Server side: what a failure while serving a call is reported as. */
export function toPeerStatus(error: unknown): PeerStatus {
  if (error instanceof PeerStatus) return error;
  if (error instanceof OciError) return new PeerStatus(status.INVALID_ARGUMENT, error.message, { cause: error });
  if (isStoreError(error)) {
    switch (error.code) {
      case "ERR_STORE_BLOB_NOT_FOUND":
        return new PeerStatus(status.NOT_FOUND, error.message, { cause: error });
      case "ERR_STORE_INVALID_ARGUMENT":
        return new PeerStatus(status.INVALID_ARGUMENT, error.message, { cause: error });
      // A partial that was aborted or a blob evicted mid-call: the piece is no longer here.
      case "ERR_STORE_ABORTED":
      case "ERR_STORE_DIGEST_MISMATCH":
        return new PeerStatus(status.FAILED_PRECONDITION, `piece no longer held: ${error.message}`, { cause: error });
      case "ERR_STORE_CLOSED":
        return new PeerStatus(status.UNAVAILABLE, "store closed", { cause: error });
      default:
        // I/O trouble here says nothing about the blob elsewhere: the requester should try another peer.
        return new PeerStatus(status.UNAVAILABLE, `store error: ${error.code}`, { cause: error });
    }
  }
  return new PeerStatus(status.INTERNAL, "internal error", { cause: error });
}

/**
 * Server side: what a call (or one Exchange read) that failed ends with. Once `signal` aborted, its reason
 * (the client cancelled, the server shuts down); a RangeError before that is a request that did not decode.
 */
export function failureStatus(error: unknown, signal: AbortSignal): PeerStatus {
  if (error instanceof RangeError && !signal.aborted) return new PeerStatus(status.INVALID_ARGUMENT, `malformed request: ${error.message}`);
  return toPeerStatus(signal.aborted ? signal.reason : error);
}

/** Client side: a call that ended with a non-OK status, as a PeerError. */
export function fromGrpcStatus(code: number, details: string, peerAddress: string): PeerError {
  return new PeerError(peerErrorCode(code), `peer ${peerAddress}: ${statusName(code)}: ${details}`);
}

/** PeerErrorCode by gRPC status; codes not listed (UNIMPLEMENTED, INTERNAL, UNKNOWN, DATA_LOSS…) are ERR_PEER_PROTOCOL. */
const PEER_ERROR_BY_STATUS: ReadonlyMap<number, PeerErrorCode> = new Map<number, PeerErrorCode>([
  // CANCELLED reaches a client only when the peer (not we) ended the call, e.g. while shutting down.
  [status.UNAVAILABLE, "ERR_PEER_UNAVAILABLE"],
  [status.ABORTED, "ERR_PEER_UNAVAILABLE"],
  [status.CANCELLED, "ERR_PEER_UNAVAILABLE"],
  // A message over our receive limit is a framing error on our side (ERR_PEER_PROTOCOL), never this.
  [status.RESOURCE_EXHAUSTED, "ERR_PEER_BUSY"],
  [status.FAILED_PRECONDITION, "ERR_PEER_MISSING_PIECE"],
  [status.NOT_FOUND, "ERR_PEER_MISSING_PIECE"],
  [status.DEADLINE_EXCEEDED, "ERR_PEER_TIMEOUT"],
  [status.INVALID_ARGUMENT, "ERR_PEER_INVALID_ARGUMENT"],
  [status.OUT_OF_RANGE, "ERR_PEER_INVALID_ARGUMENT"],
]);

function peerErrorCode(code: number): PeerErrorCode {
  // Anything else is not a peer we can talk to for this blob.
  return PEER_ERROR_BY_STATUS.get(code) ?? "ERR_PEER_PROTOCOL";
}

function statusName(code: number): string {
  return (status as Record<number, string | undefined>)[code] ?? String(code);
}
