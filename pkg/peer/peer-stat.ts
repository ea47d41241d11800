import type { StatResponse } from "../gen/peer/v1/peer.js";
import type { Digest } from "../oci/index.js";
import { PIECE_HASH_BYTES, pieceCount } from "../piece/index.js";
import type { BlobStore } from "../store/index.js";
import { PeerError } from "./errors.js";
import { type KnownPeer, MAX_HOLDERS_PER_BLOB } from "./known-peers.js";
import { type HeldBlob, isServable, servableBitmap } from "./piece-reader.js";
import type { PeerBlobStat } from "./piece-source.js";

// The answer to Stat (peer.proto), as the server builds it from its store and as the client checks it.

/** Largest Stat response accepted: a bitmap of a few thousand pieces and a few fields. */
export const MAX_STAT_RESPONSE_BYTES = 4 * 1024 * 1024;
/** Longest peer address accepted in a peer exchange (host:port, bracketed IPv6). */
const MAX_PEER_ADDRESS_LENGTH = 256;

const EMPTY_HASH = Buffer.alloc(0);

/**
 * Server side: what this agent holds of `blob` (servable pieces and their hashes) and the other holders it
 * knows of (peer exchange), asked once the hashes are read.
 */
export async function statResponse(
  store: BlobStore,
  digest: Digest,
  blob: HeldBlob,
  knownHolders: () => readonly KnownPeer[],
): Promise<StatResponse> {
  const { partial } = blob;
  const bitmap = partial === undefined ? Buffer.alloc(0) : Buffer.from(servableBitmap(partial));
  let pieceHashes: Buffer[];
  if (partial === undefined) {
    const recorded = await store.pieceHashes(digest);
    pieceHashes = recorded?.pieceSize === blob.pieceSize ? recorded.hashes.map((hash) => Buffer.from(hash)) : [];
  } else {
    pieceHashes = Array.from({ length: blob.pieceCount }, (_, index) => {
      const hash = isServable(partial, index) ? partial.pieceHash(index) : undefined;
      return hash === undefined ? EMPTY_HASH : Buffer.from(hash);
    });
  }
  const holders = knownHolders().slice(0, MAX_HOLDERS_PER_BLOB);
  return { complete: partial === undefined, size: blob.size, pieceSize: blob.pieceSize, bitmap, pieceHashes, holders };
}

/** Client side: a peer's Stat answer, checked for consistency; ERR_PEER_PROTOCOL when it is not. */
export function checkStat(response: StatResponse, peerAddress: string): PeerBlobStat {
  const { complete, size, pieceSize, bitmap } = response;
  const count = Number.isSafeInteger(size) && size >= 0 && pieceSize > 0 ? pieceCount(size, pieceSize) : -1;
  const valid =
    count >= 0 &&
    (complete || bitmap.byteLength === Math.ceil(count / 8)) &&
    response.pieceHashes.length <= count &&
    response.pieceHashes.every((hash) => hash.byteLength === 0 || hash.byteLength === PIECE_HASH_BYTES);
  if (!valid) {
    throw new PeerError(
      "ERR_PEER_PROTOCOL",
      `peer ${peerAddress} sent an inconsistent Stat (size ${size}, piece size ${pieceSize}, ${bitmap.byteLength}-byte bitmap, ${response.pieceHashes.length} hashes)`,
    );
  }
  const holders = response.holders
    .filter(
      (h) =>
        h.agentId.length > 0 &&
        h.agentId.length <= MAX_PEER_ADDRESS_LENGTH &&
        h.peerAddress.length > 0 &&
        h.peerAddress.length <= MAX_PEER_ADDRESS_LENGTH,
    )
    .slice(0, MAX_HOLDERS_PER_BLOB)
    .map((h) => ({ agentId: h.agentId, peerAddress: h.peerAddress }));
  const pieceHashes = response.pieceHashes.map((hash) => (hash.byteLength === 0 ? undefined : new Uint8Array(hash)));
  return { complete, size, pieceSize, bitmap: new Uint8Array(bitmap), pieceHashes, holders };
}
