/** Piece bytes per ReadPiecesResponse: ~1 MiB messages. */
export const MESSAGE_DATA_BYTES = 1024 * 1024;
/** Largest message either side sends or accepts: a chunk message is MESSAGE_DATA_BYTES plus a few header bytes. */
export const MAX_MESSAGE_BYTES = 4 * MESSAGE_DATA_BYTES;
/** Most pieces one ReadPieces call may ask for: bounds the work one request can queue. */
export const MAX_PIECES_PER_CALL = 64;

/** The HTTP/2 paths of PeerService's methods (peer.proto: package peer.v1, service PeerService). */
export const PEER_METHODS = {
  stat: "/peer.v1.PeerService/Stat",
  readPieces: "/peer.v1.PeerService/ReadPieces",
  exchange: "/peer.v1.PeerService/Exchange",
} as const;
