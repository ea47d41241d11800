import { type ClientHttp2Session, type ClientHttp2Stream, constants as h2, type IncomingHttpHeaders } from "node:http2";
import { OwnPauses } from "../util/index.js";
import { PeerError } from "./errors.js";
import {
  FramingError,
  GRPC_CONTENT_TYPE,
  GrpcStatus,
  decodeGrpcMessage,
  frameMessage,
  isGrpcContentType,
  statusFromHttp,
} from "./grpc-wire.js";
import type { SessionLease } from "./session-pool.js";

// The client's side of a call on node:http2 (grpc-wire.ts): opening it, reading its status, and the
// unary and server-streaming calls PeerClient makes (Stat, ReadPieces). Exchange streams (exchange-channel.ts)
// open and read their status the same way.

/** A call's gRPC status as received (possibly a code this client has no name for). */
export interface CallStatus {
  readonly code: number;
  readonly details: string;
}

/** Opens a call to `path` on `session`: the request headers; the caller writes the request messages. */
export function openCall(session: ClientHttp2Session, path: string): ClientHttp2Stream {
  return session.request(
    {
      [h2.HTTP2_HEADER_METHOD]: "POST",
      [h2.HTTP2_HEADER_PATH]: path,
      [h2.HTTP2_HEADER_CONTENT_TYPE]: GRPC_CONTENT_TYPE,
      [h2.HTTP2_HEADER_TE]: "trailers",
    },
    { endStream: false },
  );
}

/** The status trailers (or a trailers-only response) carry; undefined without grpc-status. */
export function trailerStatus(headers: IncomingHttpHeaders): CallStatus | undefined {
  const code = headers["grpc-status"];
  if (typeof code !== "string") return undefined;
  const parsed = Number(code);
  const message = headers["grpc-message"];
  return {
    code: Number.isInteger(parsed) && parsed >= 0 ? parsed : GrpcStatus.UNKNOWN,
    details: typeof message === "string" ? decodeGrpcMessage(message) : "",
  };
}

/**
 * What a call's response headers say: a status when they carry one (trailers-only) or are no HTTP 200 (the
 * specification's mapping); a PeerError when they are HTTP 200 but no gRPC answer; undefined when the call
 * goes on.
 */
export function responseStatus(headers: IncomingHttpHeaders, peerAddress: string): CallStatus | PeerError | undefined {
  const httpStatus = Number(headers[h2.HTTP2_HEADER_STATUS]);
  if (httpStatus === 200 && !isGrpcContentType(headers[h2.HTTP2_HEADER_CONTENT_TYPE])) {
    return new PeerError(
      "ERR_PEER_PROTOCOL",
      `peer ${peerAddress} answered with content-type ${String(headers[h2.HTTP2_HEADER_CONTENT_TYPE])}`,
    );
  }
  return (
    trailerStatus(headers) ?? (httpStatus === 200 ? undefined : { code: statusFromHttp(httpStatus), details: `HTTP status ${httpStatus}` })
  );
}

/** A response the client cannot decode (a framing error, a malformed message), as ERR_PEER_PROTOCOL. */
export function protocolError(error: unknown, peerAddress: string): PeerError {
  const detail = error instanceof FramingError || error instanceof RangeError ? error.message : "malformed message";
  return new PeerError("ERR_PEER_PROTOCOL", `peer ${peerAddress} sent a malformed response: ${detail}`, { cause: error });
}

/** Why a call ended before its status: the caller's signal, its stall timer, or the client closing. */
export type EndReason = "aborted" | "stalled" | "closed";

/** How a call ended, as far as the transport tells: a gRPC status, or a failure before one arrived. */
export interface CallOutcome {
  /** A gRPC status code as received (possibly one this client has no name for). */
  code: number | undefined;
  details: string;
  failure: Error | undefined;
}

export interface ActiveCall {
  /** The outcome once the call ended, or undefined after new data (or while the consumer holds pieces). */
  next(): Promise<CallOutcome | undefined>;
  /** While the consumer works on pieces, the stall timer is off. */
  consuming(on: boolean): void;
  finish(): void;
}

export interface CallOptions {
  /** The connection the call runs on; released by finish(). */
  readonly lease: SessionLease;
  readonly peerAddress: string;
  readonly path: string;
  /** The one request message. */
  readonly body: Uint8Array;
  readonly signal: AbortSignal;
  /** Receiving nothing for this long (while the consumer is not busy) ends the call with ERR_PEER_TIMEOUT. */
  readonly stallMs: number;
  /** Gets every DATA chunk; returns true to pause reading (the consumer has enough to do). */
  readonly onData: (chunk: Buffer) => boolean;
  /** Holds the call's cancel while it runs, so that closing the client ends it ("closed"). */
  readonly cancellers: Set<(reason: EndReason) => void>;
}

/**
 * Starts a call: request headers and the one request message. `next()` waits for the outcome or for the
 * next chunk; undefined means "data arrived, look again".
 */
export function startCall(options: CallOptions): ActiveCall {
  const { lease, peerAddress, signal, stallMs, onData, cancellers } = options;
  const outcome: CallOutcome = { code: undefined, details: "", failure: undefined };
  let ended: EndReason | undefined;
  let settled = false;
  let wake: (() => void) | undefined;
  let consuming = false;
  let stallTimer: NodeJS.Timeout | undefined;
  // This process's own pauses are not the peer's silence (OwnPauses).
  const pauses = new OwnPauses(stallMs);
  let heardMs = performance.now();
  const notify = (): void => {
    const resolve = wake;
    wake = undefined;
    resolve?.();
  };
  let stream: ClientHttp2Stream | undefined;
  const cancel = (reason: EndReason): void => {
    ended ??= reason;
    if (stream !== undefined && !stream.closed) stream.close(h2.NGHTTP2_CANCEL);
    settle();
  };
  const checkStall = (): void => {
    const now = performance.now();
    const silentMs = now - heardMs - pauses.ms(now);
    if (silentMs < stallMs) stallTimer = setTimeout(checkStall, stallMs - silentMs);
    else cancel("stalled");
  };
  const armStall = (): void => {
    clearTimeout(stallTimer);
    heardMs = performance.now();
    pauses.reset(heardMs);
    if (consuming || settled) return;
    stallTimer = setTimeout(checkStall, stallMs);
  };
  const fail = (error: Error): void => {
    outcome.failure ??= error;
    if (stream !== undefined && !stream.closed) stream.close(h2.NGHTTP2_CANCEL);
    settle();
  };
  const isSettled = (): boolean => settled;
  const settle = (): void => {
    if (settled) return;
    settled = true;
    clearTimeout(stallTimer);
    pauses.close();
    if (ended !== undefined) outcome.failure = endFailure(ended, peerAddress, stallMs, signal);
    notify();
  };
  const onAbort = (): void => {
    cancel("aborted");
  };
  signal.addEventListener("abort", onAbort, { once: true });
  cancellers.add(cancel);
  try {
    stream = openCall(lease.session, options.path);
  } catch (error: unknown) {
    outcome.failure = new PeerError("ERR_PEER_UNAVAILABLE", `peer ${peerAddress}: cannot start a call`, { cause: error });
    settled = true;
    pauses.close();
  }
  const active = stream;
  if (active !== undefined) {
    const takeStatus = (status: CallStatus | undefined): void => {
      if (status === undefined) return;
      outcome.code = status.code;
      outcome.details = status.details;
    };
    active.on("response", (headers) => {
      const status = responseStatus(headers, peerAddress);
      if (status instanceof PeerError) {
        fail(status);
        return;
      }
      takeStatus(status);
      armStall();
    });
    active.on("trailers", (headers: IncomingHttpHeaders) => {
      takeStatus(trailerStatus(headers));
    });
    active.on("data", (chunk: Buffer) => {
      if (settled) return;
      try {
        if (onData(chunk)) active.pause();
      } catch (error: unknown) {
        fail(error instanceof PeerError ? error : protocolError(error, peerAddress));
        return;
      }
      armStall();
      notify();
    });
    active.on("error", (error: Error) => {
      outcome.failure ??= new PeerError("ERR_PEER_UNAVAILABLE", `call to peer ${peerAddress} failed: ${error.message}`, { cause: error });
    });
    active.on("close", () => {
      if (outcome.code === undefined && outcome.failure === undefined && ended === undefined) {
        outcome.failure = new PeerError(
          "ERR_PEER_UNAVAILABLE",
          `peer ${peerAddress} closed the call without a status (HTTP/2 code ${active.rstCode})`,
        );
      }
      settle();
    });
    active.end(frameMessage(options.body));
    armStall();
  }
  return {
    next: async () => {
      if (!settled) {
        if (active?.isPaused() === true) active.resume();
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        if (!isSettled()) return undefined;
      }
      return outcome;
    },
    consuming: (on: boolean) => {
      consuming = on;
      if (on) clearTimeout(stallTimer);
      else armStall();
    },
    finish: () => {
      clearTimeout(stallTimer);
      signal.removeEventListener("abort", onAbort);
      cancellers.delete(cancel);
      // Ends the call if the consumer stopped early; a no-op when it already finished.
      if (active !== undefined && !active.closed) active.close(h2.NGHTTP2_CANCEL);
      settled = true;
      lease.release();
    },
  };
}

function endFailure(ended: EndReason, peerAddress: string, timeoutMs: number, signal: AbortSignal): PeerError {
  if (ended === "aborted") return new PeerError("ERR_PEER_ABORTED", `call to peer ${peerAddress} aborted`, { cause: signal.reason });
  if (ended === "closed") return new PeerError("ERR_PEER_ABORTED", "peer client closed");
  return new PeerError("ERR_PEER_TIMEOUT", `peer ${peerAddress} sent nothing for ${timeoutMs} ms`);
}
