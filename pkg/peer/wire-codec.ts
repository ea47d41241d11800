import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { ExchangeResponse } from "../gen/peer/v1/peer.js";
import type { FrameHandler } from "./grpc-wire.js";

// Hand-written codec for ReadPiecesResponse and ExchangeResponse, the messages that carry bulk data (an
// ExchangeResponse is a ReadPiecesResponse with a request_id, or a read's end; the field numbers are shared). The server lays
// piece bytes straight into the encoded message (one read from the store into a reused buffer), and the
// client decodes a message as it streams in, handing on the data field's bytes as views of what the
// connection received. The bytes on the wire are the same protobuf message (peer.proto); wire-codec.test.ts
// checks both directions against the generated codec.

const FIELD_PIECE = 1;
const FIELD_OFFSET = 2;
const FIELD_DATA = 3;
const FIELD_REQUEST_ID = 4;
const FIELD_END = 5;
const WIRE_VARINT: number = WireType.Varint;
const WIRE_LENGTH_DELIMITED: number = WireType.LengthDelimited;
const TAG_PIECE = (FIELD_PIECE << 3) | WireType.Varint;
const TAG_OFFSET = (FIELD_OFFSET << 3) | WireType.Varint;
const TAG_DATA = (FIELD_DATA << 3) | WireType.LengthDelimited;
const TAG_REQUEST_ID = (FIELD_REQUEST_ID << 3) | WireType.Varint;
/** Bytes a chunk message needs beyond its data, at most: four one-byte tags and four uint32 varints. */
export const MAX_CHUNK_HEADER_BYTES = 4 + 4 * 5;
/**
 * Bytes of a message the streaming decoder looks at for the fields before `data`. Our encoder needs at
 * most MAX_CHUNK_HEADER_BYTES; other encoders (field order, unknown fields) fall back to whole-message decoding.
 */
const HEADER_SCAN_BYTES = 64;

/** An encoded ReadPiecesResponse whose `data` field the caller fills in before sending `message`. */
export interface ChunkMessage {
  /** The whole encoded message. */
  readonly message: Buffer;
  /** The `data` field's bytes inside `message`; write the piece bytes here. */
  readonly data: Buffer;
}

/**
 * Lays out an encoded ReadPiecesResponse (or, with `requestId`, an ExchangeResponse chunk) for `dataLength`
 * bytes at `offset` of `piece` so that it ends exactly at `end` of `buffer`: the message then starts at
 * `message.byteOffset - buffer.byteOffset`, which leaves room in front of it for the gRPC message prefix.
 */
export function chunkMessageEndingAt(
  buffer: Buffer,
  end: number,
  piece: number,
  offset: number,
  dataLength: number,
  requestId?: number,
): ChunkMessage {
  const header = Buffer.allocUnsafe(MAX_CHUNK_HEADER_BYTES);
  let position = 0;
  if (requestId !== undefined) {
    header[position++] = TAG_REQUEST_ID;
    position = writeVarint(header, position, requestId);
  }
  header[position++] = TAG_PIECE;
  position = writeVarint(header, position, piece);
  header[position++] = TAG_OFFSET;
  position = writeVarint(header, position, offset);
  header[position++] = TAG_DATA;
  position = writeVarint(header, position, dataLength);
  const start = end - dataLength - position;
  if (start < 0) throw new RangeError(`a ${buffer.length}-byte buffer cannot hold a ${dataLength}-byte chunk ending at ${end}`);
  header.copy(buffer, start, 0, position);
  return { message: buffer.subarray(start, end), data: buffer.subarray(start + position, end) };
}

/** Encodes a whole ReadPiecesResponse, or with `requestId` an ExchangeResponse chunk (tests and small messages). */
export function encodeChunk(piece: number, offset: number, data: Uint8Array, requestId?: number): Buffer {
  const buffer = Buffer.allocUnsafe(MAX_CHUNK_HEADER_BYTES + data.byteLength);
  const chunk = chunkMessageEndingAt(buffer, buffer.length, piece, offset, data.byteLength, requestId);
  chunk.data.set(data);
  return chunk.message;
}

/** Where ChunkDecoder hands what it decodes. */
export interface ChunkSink {
  /**
   * A message begins: `length` bytes of `piece` from `offset` on follow through onChunkData. `requestId` is
   * the ExchangeResponse's request_id (0 when absent, as protobuf reads a missing field).
   */
  onChunkStart(piece: number, offset: number, length: number, requestId: number): void;
  /** The next bytes of the current message's data; a view valid only during the call. */
  onChunkData(bytes: Buffer): void;
  /**
   * An ExchangeResponse ending read `requestId` with a gRPC status code. Sinks without it (ReadPieces)
   * get such a message as an empty chunk, as any message with a field they do not know.
   */
  onEnd?(requestId: number, code: number, message: string): void;
}

/**
 * Decodes ReadPiecesResponse messages as their bytes arrive (a FrameHandler under a MessageFramer).
 * When `data` is the message's last field (always, from Shoal's encoder), its bytes are handed on as they
 * stream in, without a copy; any other layout is decoded once the whole message is there.
 */
export class ChunkDecoder implements FrameHandler {
  private readonly header = Buffer.alloc(HEADER_SCAN_BYTES);
  private headerFilled = 0;
  private messageLength = 0;
  private mode: "header" | "data" | "whole" = "header";
  private parts: Buffer[] = [];

  constructor(private readonly sink: ChunkSink) {}

  onMessageStart(length: number): void {
    this.messageLength = length;
    this.headerFilled = 0;
    this.mode = "header";
    this.parts = [];
  }

  onMessageData(bytes: Buffer): void {
    if (this.mode === "data") {
      this.sink.onChunkData(bytes);
      return;
    }
    if (this.mode === "whole") {
      this.parts.push(Buffer.from(bytes));
      return;
    }
    const take = Math.min(bytes.byteLength, HEADER_SCAN_BYTES - this.headerFilled);
    bytes.copy(this.header, this.headerFilled, 0, take);
    this.headerFilled += take;
    const scan = scanHeader(this.header.subarray(0, this.headerFilled), this.messageLength);
    if (scan.kind === "streaming") {
      this.mode = "data";
      this.sink.onChunkStart(scan.piece, scan.offset, scan.dataLength, scan.requestId);
      // Bytes of this chunk past the header are data.
      const dataFrom = scan.headerBytes - (this.headerFilled - take);
      if (dataFrom < bytes.byteLength) this.sink.onChunkData(bytes.subarray(dataFrom));
    } else if (scan.kind === "whole" || this.headerFilled === HEADER_SCAN_BYTES) {
      this.mode = "whole";
      this.parts = [Buffer.from(this.header.subarray(0, this.headerFilled))];
      if (take < bytes.byteLength) this.parts.push(Buffer.from(bytes.subarray(take)));
    }
  }

  onMessageEnd(): void {
    if (this.mode === "data") return;
    const message = this.mode === "whole" ? Buffer.concat(this.parts) : this.header.subarray(0, this.headerFilled);
    const { piece, offset, data, requestId, end } = decodeChunk(message);
    this.parts = [];
    if (end !== undefined && this.sink.onEnd !== undefined) {
      this.sink.onEnd(requestId, end.code, end.message);
      return;
    }
    this.sink.onChunkStart(piece, offset, data.byteLength, requestId);
    if (data.byteLength > 0) this.sink.onChunkData(data);
    this.parts = [];
  }
}

type HeaderScan =
  | {
      readonly kind: "streaming";
      readonly piece: number;
      readonly offset: number;
      readonly dataLength: number;
      readonly headerBytes: number;
      readonly requestId: number;
    }
  | { readonly kind: "whole" }
  | { readonly kind: "more" };

/**
 * Reads the fields in front of `data` from the first bytes of a message: "streaming" when `data` follows
 * and runs to the message's end, "whole" when the message is laid out otherwise, "more" when the bytes
 * seen so far do not tell yet.
 */
function scanHeader(bytes: Buffer, messageLength: number): HeaderScan {
  let position = 0;
  let piece = 0;
  let offset = 0;
  let requestId = 0;
  while (position < bytes.byteLength) {
    const tag = readVarint(bytes, position);
    if (tag === undefined) return { kind: "more" };
    position = tag.next;
    const field = tag.value >>> 3;
    const wireType = tag.value & 7;
    if (wireType === WIRE_VARINT) {
      const value = readVarint(bytes, position);
      if (value === undefined) return { kind: "more" };
      position = value.next;
      if (field === FIELD_PIECE) piece = value.value;
      else if (field === FIELD_OFFSET) offset = value.value;
      else if (field === FIELD_REQUEST_ID) requestId = value.value;
    } else if (wireType === WIRE_LENGTH_DELIMITED && field === FIELD_DATA) {
      const length = readVarint(bytes, position);
      if (length === undefined) return { kind: "more" };
      if (length.next + length.value !== messageLength) return { kind: "whole" };
      return { kind: "streaming", piece, offset, dataLength: length.value, headerBytes: length.next, requestId };
    } else {
      return { kind: "whole" };
    }
  }
  return { kind: "more" };
}

/** A uint32 varint at `position` (longer ones wrap as protobuf's uint32 does); undefined if incomplete. */
function readVarint(bytes: Buffer, position: number): { value: number; next: number } | undefined {
  let value = 0;
  for (let i = 0; i < 10; i++) {
    const byte = bytes[position + i];
    if (byte === undefined) return undefined;
    if (i < 5) value |= (byte & 0x7f) << (7 * i);
    if ((byte & 0x80) === 0) return { value: value >>> 0, next: position + i + 1 };
  }
  throw new RangeError("varint longer than 10 bytes");
}

/** A read's end as an ExchangeResponse carries it. */
export interface ChunkEnd {
  readonly code: number;
  readonly message: string;
}

/**
 * Decodes a whole ReadPiecesResponse or ExchangeResponse; `data` is a view of `buffer`. Throws on
 * malformed input.
 */
export function decodeChunk(buffer: Buffer): { piece: number; offset: number; data: Buffer; requestId: number; end: ChunkEnd | undefined } {
  const reader = new BinaryReader(buffer);
  let piece = 0;
  let offset = 0;
  let requestId = 0;
  let end: ChunkEnd | undefined;
  let data: Uint8Array = EMPTY;
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === FIELD_PIECE && wireType === WireType.Varint) piece = reader.uint32();
    else if (field === FIELD_OFFSET && wireType === WireType.Varint) offset = reader.uint32();
    else if (field === FIELD_DATA && wireType === WireType.LengthDelimited) data = reader.bytes();
    else if (field === FIELD_REQUEST_ID && wireType === WireType.Varint) requestId = reader.uint32();
    else if (field === FIELD_END && wireType === WireType.LengthDelimited) end = decodeEnd(reader.bytes());
    else reader.skip(wireType, field);
  }
  if (reader.pos !== reader.len) throw new RangeError("truncated ReadPiecesResponse");
  return { piece, offset, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength), requestId, end };
}

/** Encodes an ExchangeResponse that ends read `requestId` with status `code` (small: the generated codec). */
export function encodeEnd(requestId: number, code: number, message: string): Buffer {
  return Buffer.from(ExchangeResponse.encode({ piece: 0, offset: 0, data: EMPTY_BUFFER, requestId, end: { code, message } }).finish());
}

const EMPTY_BUFFER = Buffer.alloc(0);

function decodeEnd(bytes: Uint8Array): ChunkEnd {
  const reader = new BinaryReader(bytes);
  let code = 0;
  let message = "";
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === WireType.Varint) code = reader.uint32();
    else if (field === 2 && wireType === WireType.LengthDelimited) message = reader.string();
    else reader.skip(wireType, field);
  }
  return { code, message };
}

const EMPTY = new Uint8Array(0);

function writeVarint(target: Buffer, position: number, value: number): number {
  let rest = value >>> 0;
  while (rest >= 0x80) {
    target[position++] = (rest & 0x7f) | 0x80;
    rest >>>= 7;
  }
  target[position++] = rest;
  return position;
}
