import type { MethodDefinition } from "@grpc/grpc-js";
import { PeerServiceService, type StatRequest, type StatResponse } from "../gen/peer/v1/peer.js";
import { decodeChunk } from "./wire-codec.js";

/** Piece bytes per ReadPiecesResponse (DESIGN.md: ~1 MiB messages). */
export const MESSAGE_DATA_BYTES = 1024 * 1024;
/** Largest message either side sends or accepts: a chunk message is MESSAGE_DATA_BYTES plus a few header bytes. */
export const MAX_MESSAGE_BYTES = 4 * MESSAGE_DATA_BYTES;
/** Most pieces one ReadPieces call may ask for: bounds the work one request can queue. */
export const MAX_PIECES_PER_CALL = 64;

/**
 * PeerService (peer.proto) as served and called here: the generated definition, except that ReadPieces
 * responses use the zero-copy codec of wire-codec.ts. The server hands grpc-js already encoded messages
 * (Buffers from allocChunkMessage); the client gets `data` as a view of the received message.
 */
export const peerService = {
  stat: PeerServiceService.stat as MethodDefinition<StatRequest, StatResponse>,
  readPieces: {
    path: PeerServiceService.readPieces.path,
    requestStream: false,
    responseStream: true,
    requestSerialize: PeerServiceService.readPieces.requestSerialize,
    requestDeserialize: PeerServiceService.readPieces.requestDeserialize,
    responseSerialize: (message: Buffer): Buffer => message,
    responseDeserialize: decodeChunk,
  },
};
