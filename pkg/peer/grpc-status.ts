import { Metadata, status, type ServiceError, type StatusObject } from "@grpc/grpc-js";
import { OciError } from "../oci/index.js";
import { isStoreError } from "../store/index.js";
import { PeerError, type PeerErrorCode } from "./errors.js";

// The one place where Shoal errors become gRPC statuses and back (STYLE.md: map at the edge).

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

  toStatusObject(): StatusObject {
    return { code: this.code, details: this.details, metadata: new Metadata() };
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

/** Client side: a failed call as a PeerError. */
export function fromServiceError(error: ServiceError, peerAddress: string): PeerError {
  const code = peerErrorCode(error);
  return new PeerError(code, `peer ${peerAddress}: ${statusName(error.code)}: ${error.details}`, { cause: error });
}

function peerErrorCode(error: ServiceError): PeerErrorCode {
  switch (error.code) {
    case status.UNAVAILABLE:
    case status.ABORTED:
    case status.CANCELLED:
      // CANCELLED reaches here only when the peer (not we) ended the call, e.g. while shutting down.
      return "ERR_PEER_UNAVAILABLE";
    case status.RESOURCE_EXHAUSTED:
      // grpc-js reports a message over our receive limit with the same code; that is the peer's fault.
      return error.details.startsWith("Received message larger than max") ? "ERR_PEER_PROTOCOL" : "ERR_PEER_BUSY";
    case status.FAILED_PRECONDITION:
    case status.NOT_FOUND:
      return "ERR_PEER_MISSING_PIECE";
    case status.DEADLINE_EXCEEDED:
      return "ERR_PEER_TIMEOUT";
    case status.INVALID_ARGUMENT:
    case status.OUT_OF_RANGE:
      return "ERR_PEER_INVALID_ARGUMENT";
    default:
      // UNIMPLEMENTED, INTERNAL (includes our own failure to parse its message), UNKNOWN, DATA_LOSS, …:
      // not a peer we can talk to for this blob.
      return "ERR_PEER_PROTOCOL";
  }
}

function statusName(code: number): string {
  return (status as Record<number, string | undefined>)[code] ?? String(code);
}
