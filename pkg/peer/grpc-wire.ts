import { status } from "@grpc/grpc-js";

// The gRPC wire protocol over HTTP/2 (the "gRPC over HTTP2" specification), as far as PeerService uses it:
// unary and server-streaming calls, identity encoding only. PeerService is served and called on
// node:http2 directly rather than through grpc-js, because grpc-js copies every message twice (framing on
// send, reassembly with Buffer.concat on receive) and allocates a buffer per message; for the bytes of a
// blob that was most of an agent's CPU. What goes over the wire is plain gRPC: grpc-js and any other gRPC
// client can call this server (peer-interop.test.ts calls it with the generated grpc-js client).

export const GRPC_CONTENT_TYPE = "application/grpc";
/** Each message: a compressed flag byte and a big-endian uint32 length. */
export const MESSAGE_PREFIX_BYTES = 5;

export { status as GrpcStatus };

/** `application/grpc`, optionally `+proto` and parameters (the specification's Content-Type rule). */
export function isGrpcContentType(value: string | string[] | undefined): boolean {
  if (typeof value !== "string") return false;
  const type = value.split(";")[0]?.trim().toLowerCase() ?? "";
  return type === GRPC_CONTENT_TYPE || type === `${GRPC_CONTENT_TYPE}+proto`;
}

/** Writes the 5-byte prefix of an uncompressed message of `length` bytes at `offset` of `target`. */
export function writeMessagePrefix(target: Buffer, offset: number, length: number): void {
  target[offset] = 0;
  target.writeUInt32BE(length, offset + 1);
}

/** A whole length-prefixed message (small messages: requests, unary responses). */
export function frameMessage(body: Uint8Array): Buffer {
  const framed = Buffer.allocUnsafe(MESSAGE_PREFIX_BYTES + body.byteLength);
  writeMessagePrefix(framed, 0, body.byteLength);
  framed.set(body, MESSAGE_PREFIX_BYTES);
  return framed;
}

/** grpc-message is percent-encoded UTF-8: bytes outside printable ASCII, and `%`, become %XX. */
export function encodeGrpcMessage(text: string): string {
  let encoded = "";
  for (const byte of Buffer.from(text, "utf8")) {
    encoded +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return encoded;
}

/** The inverse of encodeGrpcMessage; malformed escapes are kept as they are (the specification says so). */
export function decodeGrpcMessage(text: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const hex = text.slice(i + 1, i + 3);
    if (text[i] === "%" && /^[0-9a-fA-F]{2}$/.test(hex)) {
      bytes.push(Number.parseInt(hex, 16));
      i += 2;
    } else {
      bytes.push(text.charCodeAt(i) & 0xff);
    }
  }
  return Buffer.from(bytes).toString("utf8");
}

/** The gRPC status a response with a non-200 HTTP status stands for (the specification's mapping). */
export function statusFromHttp(httpStatus: number): status {
  switch (httpStatus) {
    case 400:
      return status.INTERNAL;
    case 401:
      return status.UNAUTHENTICATED;
    case 403:
      return status.PERMISSION_DENIED;
    case 404:
      return status.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return status.UNAVAILABLE;
    default:
      return status.UNKNOWN;
  }
}

/** What a MessageFramer reports: message boundaries, and the message bytes as views of the received chunks. */
export interface FrameHandler {
  onMessageStart(length: number): void;
  /** Part of the current message's body; a view of the received chunk, valid only during the call. */
  onMessageData(bytes: Buffer): void;
  onMessageEnd(): void;
}

/** A framing error: the peer does not speak the protocol (a status INTERNAL or RESOURCE_EXHAUSTED). */
export class FramingError extends Error {
  override readonly name = "FramingError";
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Splits a stream of DATA chunks into length-prefixed messages without copying message bytes. Messages
 * longer than `maxMessageBytes` and compressed messages (none is ever negotiated) are framing errors.
 */
export class MessageFramer {
  private readonly prefix = Buffer.alloc(MESSAGE_PREFIX_BYTES);
  private prefixFilled = 0;
  /** Body bytes still to come of the current message; -1 between messages. */
  private remaining = -1;

  constructor(
    private readonly maxMessageBytes: number,
    private readonly handler: FrameHandler,
  ) {}

  /** At a message boundary (a stream may only end here). */
  get idle(): boolean {
    return this.remaining < 0 && this.prefixFilled === 0;
  }

  push(chunk: Buffer): void {
    let offset = 0;
    while (offset < chunk.byteLength) {
      if (this.remaining < 0) {
        const take = Math.min(MESSAGE_PREFIX_BYTES - this.prefixFilled, chunk.byteLength - offset);
        chunk.copy(this.prefix, this.prefixFilled, offset, offset + take);
        this.prefixFilled += take;
        offset += take;
        if (this.prefixFilled < MESSAGE_PREFIX_BYTES) return;
        this.prefixFilled = 0;
        if (this.prefix[0] !== 0) throw new FramingError(status.INTERNAL, "compressed message, but no compression was negotiated");
        const length = this.prefix.readUInt32BE(1);
        if (length > this.maxMessageBytes) {
          throw new FramingError(status.RESOURCE_EXHAUSTED, `message of ${length} bytes exceeds the limit of ${this.maxMessageBytes}`);
        }
        this.remaining = length;
        this.handler.onMessageStart(length);
      } else {
        const take = Math.min(this.remaining, chunk.byteLength - offset);
        if (take > 0) this.handler.onMessageData(chunk.subarray(offset, offset + take));
        offset += take;
        this.remaining -= take;
      }
      if (this.remaining === 0) {
        this.remaining = -1;
        this.handler.onMessageEnd();
      }
    }
  }
}

/** Collects whole messages (small ones: requests and unary responses) in copies of their own. */
export class MessageCollector implements FrameHandler {
  readonly messages: Buffer[] = [];
  private parts: Buffer[] = [];
  private length = 0;

  onMessageStart(length: number): void {
    this.parts = [];
    this.length = length;
  }

  onMessageData(bytes: Buffer): void {
    this.parts.push(Buffer.from(bytes));
  }

  onMessageEnd(): void {
    this.messages.push(Buffer.concat(this.parts, this.length));
    this.parts = [];
  }
}
