import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import type { ReadPiecesResponse } from "../gen/peer/v1/peer.js";

// Hand-written codec for ReadPiecesResponse, the only message that carries bulk data. The generated one
// copies `data` three times on encode (writer chunk, finish, Buffer.from) and once on decode; this one
// lets the server copy piece bytes straight into the encoded message and the client keep a view of it.
// The bytes on the wire are the same protobuf message (peer.proto); wire-codec.test.ts checks both
// directions against the generated codec.

const TAG_PIECE = (1 << 3) | WireType.Varint;
const TAG_OFFSET = (2 << 3) | WireType.Varint;
const TAG_DATA = (3 << 3) | WireType.LengthDelimited;
/** Bytes a chunk message needs beyond its data, at most: three one-byte tags and three uint32 varints. */
export const MAX_CHUNK_HEADER_BYTES = 3 + 3 * 5;

/** An encoded ReadPiecesResponse whose `data` field the caller fills in before sending `message`. */
export interface ChunkMessage {
  /** The whole encoded message, handed to grpc-js as is. */
  readonly message: Buffer;
  /** The `data` field's bytes inside `message`; write the piece bytes here. */
  readonly data: Buffer;
}

/**
 * Lays out an encoded ReadPiecesResponse for `dataLength` bytes at `offset` of `piece` at the start of
 * `buffer` (at least MAX_CHUNK_HEADER_BYTES + dataLength long, e.g. a reused one).
 */
export function chunkMessageIn(buffer: Buffer, piece: number, offset: number, dataLength: number): ChunkMessage {
  let position = 0;
  buffer[position++] = TAG_PIECE;
  position = writeVarint(buffer, position, piece);
  buffer[position++] = TAG_OFFSET;
  position = writeVarint(buffer, position, offset);
  buffer[position++] = TAG_DATA;
  position = writeVarint(buffer, position, dataLength);
  if (buffer.length < position + dataLength) throw new RangeError(`a ${buffer.length}-byte buffer cannot hold a ${dataLength}-byte chunk`);
  return { message: buffer.subarray(0, position + dataLength), data: buffer.subarray(position, position + dataLength) };
}

/** Allocates an encoded ReadPiecesResponse for `dataLength` bytes at `offset` of `piece`. */
export function allocChunkMessage(piece: number, offset: number, dataLength: number): ChunkMessage {
  // allocUnsafe: every byte is written, the header here and `data` by the caller.
  return chunkMessageIn(Buffer.allocUnsafe(MAX_CHUNK_HEADER_BYTES + dataLength), piece, offset, dataLength);
}

/** Encodes a whole ReadPiecesResponse (tests and small messages). */
export function encodeChunk(piece: number, offset: number, data: Uint8Array): Buffer {
  const chunk = allocChunkMessage(piece, offset, data.byteLength);
  chunk.data.set(data);
  return chunk.message;
}

/** Decodes a ReadPiecesResponse; `data` is a view of `buffer`, not a copy. Throws on malformed input. */
export function decodeChunk(buffer: Buffer): ReadPiecesResponse {
  const reader = new BinaryReader(buffer);
  let piece = 0;
  let offset = 0;
  let data: Uint8Array = EMPTY;
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === WireType.Varint) piece = reader.uint32();
    else if (field === 2 && wireType === WireType.Varint) offset = reader.uint32();
    else if (field === 3 && wireType === WireType.LengthDelimited) data = reader.bytes();
    else reader.skip(wireType, field);
  }
  if (reader.pos !== reader.len) throw new RangeError("truncated ReadPiecesResponse");
  return { piece, offset, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength) };
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
