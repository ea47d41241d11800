import { constants as h2, type ServerHttp2Stream } from "node:http2";
import { PeerStatus } from "./grpc-status.js";
import { GRPC_CONTENT_TYPE, GrpcStatus, MessageCollector, MessageFramer, encodeGrpcMessage } from "./grpc-wire.js";

// The server's side of a call on node:http2 (grpc-wire.ts): its request, and how it is answered.

/** Requests are a digest and at most MAX_PIECES_PER_CALL varints. */
export const MAX_REQUEST_BYTES = 64 * 1024;
/** A caller must have sent its whole request by then (a slow or silent one would hold a stream). */
const REQUEST_TIMEOUT_MS = 10_000;

/** The call's one request message, once the client has ended its side; bounded in size and time. */
export function readRequest(stream: ServerHttp2Stream, signal: AbortSignal): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const collector = new MessageCollector();
    const framer = new MessageFramer(MAX_REQUEST_BYTES, collector);
    const cleanup = (): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      stream.off("data", onData);
      stream.off("end", onEnd);
    };
    const fail = (error: unknown): void => {
      cleanup();
      reject(error instanceof Error ? error : new Error(String(error)));
    };
    const onData = (chunk: Buffer): void => {
      try {
        framer.push(chunk);
      } catch (error: unknown) {
        fail(new PeerStatus(GrpcStatus.RESOURCE_EXHAUSTED, error instanceof Error ? error.message : "malformed request"));
      }
    };
    const onEnd = (): void => {
      cleanup();
      const [message, ...extra] = collector.messages;
      if (message === undefined || extra.length > 0 || !framer.idle) {
        reject(new PeerStatus(GrpcStatus.INVALID_ARGUMENT, `a call carries exactly one request message, not ${collector.messages.length}`));
      } else {
        resolve(message);
      }
    };
    const onAbort = (): void => {
      fail(signal.reason);
    };
    const timer = setTimeout(() => {
      fail(new PeerStatus(GrpcStatus.DEADLINE_EXCEEDED, `the request did not arrive within ${REQUEST_TIMEOUT_MS} ms`));
    }, REQUEST_TIMEOUT_MS);
    signal.addEventListener("abort", onAbort, { once: true });
    stream.on("data", onData);
    stream.once("end", onEnd);
  });
}

/** A successful response: headers, the messages, trailers with status OK. */
export function respondMessages(stream: ServerHttp2Stream, messages: readonly Buffer[]): void {
  if (stream.closed || stream.destroyed) return;
  stream.respond({ [h2.HTTP2_HEADER_STATUS]: 200, [h2.HTTP2_HEADER_CONTENT_TYPE]: GRPC_CONTENT_TYPE }, { waitForTrailers: true });
  stream.once("wantTrailers", () => {
    stream.sendTrailers({ "grpc-status": String(GrpcStatus.OK) });
  });
  for (const message of messages) stream.write(message);
  stream.end();
}

/**
 * Ends a call with a status: a trailers-only response when nothing was sent yet, else trailers after what
 * was sent (a streaming call set up with waitForTrailers by PieceWriter or ExchangeStream).
 */
export function endCall(stream: ServerHttp2Stream, peerStatus: PeerStatus): void {
  if (stream.closed || stream.destroyed) return;
  const trailers =
    peerStatus.code === GrpcStatus.OK
      ? { "grpc-status": String(GrpcStatus.OK) }
      : { "grpc-status": String(peerStatus.code), "grpc-message": encodeGrpcMessage(peerStatus.details) };
  if (!stream.headersSent) {
    stream.respond({ [h2.HTTP2_HEADER_STATUS]: 200, [h2.HTTP2_HEADER_CONTENT_TYPE]: GRPC_CONTENT_TYPE, ...trailers }, { endStream: true });
    return;
  }
  stream.removeAllListeners("wantTrailers");
  stream.once("wantTrailers", () => {
    stream.sendTrailers(trailers);
  });
  stream.end();
}

/** Not a gRPC request at all: a plain HTTP status (the specification's 405/415 answers). */
export function respondHttp(stream: ServerHttp2Stream, httpStatus: number): void {
  if (stream.closed || stream.destroyed) return;
  stream.respond({ [h2.HTTP2_HEADER_STATUS]: httpStatus }, { endStream: true });
}
