import { type Digest, parseDigest } from "../oci/index.js";
import { PieceBitmap } from "../piece/index.js";
import { MAX_PIECE_SIZE_BYTES, pieceCount } from "../piece/index.js";
import { TrackerError } from "./errors.js";
import type { AgentIdentity, BlobAnnouncement, BlobChange, TagKey, TagRecord } from "./tracker.js";

/** Longest agent id; agents use a UUID or node name plus a suffix. */
export const MAX_AGENT_ID_LENGTH = 128;
/** Kubernetes node names are DNS subdomains: at most 253 characters. */
export const MAX_NODE_NAME_LENGTH = 253;
/** Zones are label values: at most 63 characters. */
export const MAX_ZONE_LENGTH = 63;
/** host:port with a DNS name of up to 253 characters or a bracketed IPv6 address. */
export const MAX_PEER_ADDRESS_LENGTH = 261;
/**
 * More pieces than the store ever cuts a blob into (it targets ~2k); bounds bitmaps (8 KiB) and hash
 * lists (~2.2 MB per lookup answer, under grpc-js' 4 MiB default message limit).
 */
export const MAX_PIECES_PER_BLOB = 65_536;
export const SHA256_BYTES = 32;

const PRINTABLE = /^[\x21-\x7e]+$/;
const PEER_ADDRESS = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$/;

/** An announcement checked and normalized: bitmap bits past the piece count cleared, hashes copied. */
export interface ValidAnnouncement {
  readonly digest: Digest;
  readonly size: number;
  readonly pieceSize: number;
  readonly pieceCount: number;
  readonly complete: boolean;
  /** undefined when complete. */
  readonly bitmap: Uint8Array | undefined;
  /** Pieces held: pieceCount when complete. */
  readonly heldPieces: number;
  /** Copied, so the caller's buffers may be pooled or reused; indices distinct and within the blob. */
  readonly hashes: { readonly indices: Uint32Array; readonly bytes: Uint8Array };
}

function invalid(message: string, cause?: unknown): TrackerError {
  return new TrackerError("ERR_TRACKER_INVALID_ARGUMENT", message, cause === undefined ? undefined : { cause });
}

function checkString(what: string, value: string, max: number, allowEmpty: boolean): void {
  if (value === "" && allowEmpty) return;
  if (value === "") throw invalid(`${what} is empty`);
  if (value.length > max) throw invalid(`${what} is longer than ${max} characters`);
  if (!PRINTABLE.test(value)) throw invalid(`${what} ${JSON.stringify(value.slice(0, 80))} contains spaces or non-ASCII characters`);
}

/** Throws ERR_TRACKER_INVALID_ARGUMENT unless the identity's fields are present, bounded and printable. */
export function validateIdentity(identity: AgentIdentity): AgentIdentity {
  checkString("agent id", identity.agentId, MAX_AGENT_ID_LENGTH, false);
  checkString("node name", identity.nodeName, MAX_NODE_NAME_LENGTH, false);
  checkString("zone", identity.zone, MAX_ZONE_LENGTH, true);
  checkString("peer address", identity.peerAddress, MAX_PEER_ADDRESS_LENGTH, false);
  const port = Number(PEER_ADDRESS.exec(identity.peerAddress)?.[2] ?? NaN);
  if (!(port >= 1 && port <= 65535)) throw invalid(`peer address ${JSON.stringify(identity.peerAddress)} is not HOST:PORT`);
  return {
    agentId: identity.agentId,
    nodeName: identity.nodeName,
    zone: identity.zone,
    peerAddress: identity.peerAddress,
  };
}

/** Validates a digest that arrived as a plain string (wire input). */
export function validateDigest(value: string): Digest {
  try {
    return parseDigest(value);
  } catch (cause) {
    throw invalid(cause instanceof Error ? cause.message : "invalid digest", cause);
  }
}

/** Largest load a heartbeat carries (uint32 on the wire). */
export const MAX_ACTIVE_UPLOADS = 0xffff_ffff;

export function validateActiveUploads(count: number): number {
  if (!Number.isInteger(count) || count < 0 || count > MAX_ACTIVE_UPLOADS) throw invalid(`active uploads ${count} is not a count`);
  return count;
}

export function validateAgentId(value: string): string {
  checkString("agent id", value, MAX_AGENT_ID_LENGTH, false);
  return value;
}

/**
 * Checks everything about an announcement that does not depend on other agents: digest, size and piece
 * size bounds, bitmap length, hash lengths and indices. Conflicts with what others announced are the
 * tracker's business.
 */
export function validateAnnouncement(announcement: BlobAnnouncement): ValidAnnouncement {
  const digest = validateDigest(announcement.digest);
  const { size, pieceSize, complete } = announcement;
  if (!Number.isSafeInteger(size) || size < 0) throw invalid(`size ${size} of ${digest} is not a whole number of bytes`);
  if (!Number.isSafeInteger(pieceSize) || pieceSize < 1 || pieceSize > MAX_PIECE_SIZE_BYTES) {
    throw invalid(`piece size ${pieceSize} of ${digest} is outside 1..${MAX_PIECE_SIZE_BYTES} bytes`);
  }
  const pieces = pieceCount(size, pieceSize);
  if (pieces > MAX_PIECES_PER_BLOB) throw invalid(`${digest} has ${pieces} pieces; at most ${MAX_PIECES_PER_BLOB} are tracked`);
  let bitmap: Uint8Array | undefined;
  let heldPieces = pieces;
  if (!complete) {
    const bytes = announcement.bitmap ?? new Uint8Array(0);
    const expected = Math.ceil(pieces / 8);
    if (bytes.length !== expected) throw invalid(`bitmap of ${digest} has ${bytes.length} bytes; ${pieces} pieces need ${expected}`);
    const parsed = new PieceBitmap(pieces, bytes);
    bitmap = parsed.toBytes();
    heldPieces = parsed.count;
  }
  const { pieceHashes, packedHashes } = announcement;
  if (pieceHashes !== undefined && pieceHashes.length > 0 && packedHashes !== undefined && packedHashes.indices.length > 0)
    throw invalid(`piece hashes of ${digest} given both as a list and packed`);
  const count = packedHashes !== undefined && packedHashes.indices.length > 0 ? packedHashes.indices.length : (pieceHashes?.length ?? 0);
  if (count > pieces) throw invalid(`${count} piece hashes for ${pieces} pieces of ${digest}`);
  if (packedHashes !== undefined && packedHashes.bytes.length !== packedHashes.indices.length * SHA256_BYTES)
    throw invalid(`${packedHashes.bytes.length} bytes of packed hashes for ${packedHashes.indices.length} pieces of ${digest}`);
  // Copied into one buffer (the caller's may be pooled or reused); a flag per piece, not a Set: a tracker
  // checks tens of thousands of hashes a second.
  const indices = new Uint32Array(count);
  const bytes = new Uint8Array(count * SHA256_BYTES);
  const seen = new Uint8Array(pieces);
  for (let i = 0; i < count; i++) {
    const listed = packedHashes === undefined || packedHashes.indices.length === 0 ? pieceHashes?.[i] : undefined;
    const index = listed === undefined ? (packedHashes?.indices[i] ?? -1) : listed.index;
    if (!Number.isInteger(index) || index < 0 || index >= pieces)
      throw invalid(`piece hash index ${index} outside 0..${pieces - 1} of ${digest}`);
    if (seen[index] === 1) throw invalid(`piece hash ${index} of ${digest} given twice`);
    seen[index] = 1;
    indices[i] = index;
    if (listed === undefined) continue;
    if (listed.sha256.length !== SHA256_BYTES)
      throw invalid(`piece hash ${index} of ${digest} has ${listed.sha256.length} bytes, not ${SHA256_BYTES}`);
    bytes.set(listed.sha256, i * SHA256_BYTES);
  }
  if (packedHashes !== undefined && packedHashes.indices.length > 0) bytes.set(packedHashes.bytes);
  return { digest, size, pieceSize, pieceCount: pieces, complete, bitmap, heldPieces, hashes: { indices, bytes } };
}

/** The announcement as the clients keep it in their inventory: normalized copies, safe from later changes by the caller. */
export function inventoryEntry(valid: ValidAnnouncement): BlobAnnouncement {
  return {
    digest: valid.digest,
    size: valid.size,
    pieceSize: valid.pieceSize,
    complete: valid.complete,
    ...(valid.bitmap === undefined ? {} : { bitmap: valid.bitmap }),
    ...(valid.hashes.indices.length === 0 ? {} : { packedHashes: valid.hashes }),
  };
}

/** Registry hosts are DNS names with an optional port. */
const MAX_REGISTRY_LENGTH = 261;
/** distribution's limit on repository names. */
const MAX_REPOSITORY_LENGTH = 255;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const MAX_MEDIA_TYPE_LENGTH = 255;

/** Throws ERR_TRACKER_INVALID_ARGUMENT unless the key's parts are bounded, printable and the tag well-formed. */
export function validateTagKey(key: TagKey): TagKey {
  checkString("registry", key.registry, MAX_REGISTRY_LENGTH, false);
  checkString("repository", key.repository, MAX_REPOSITORY_LENGTH, false);
  if (!TAG.test(key.tag)) throw invalid(`tag ${JSON.stringify(key.tag.slice(0, 130))} is not a valid tag`);
  return { registry: key.registry, repository: key.repository, tag: key.tag };
}

/** A tag record checked field by field; the digest normalized. */
export function validateTagRecord(record: TagRecord): TagRecord {
  const key = validateTagKey(record);
  checkString("media type", record.mediaType, MAX_MEDIA_TYPE_LENGTH, false);
  if (!Number.isSafeInteger(record.size) || record.size < 0) throw invalid(`size ${record.size} is not a byte count`);
  if (!Number.isSafeInteger(record.seenAtMs) || record.seenAtMs <= 0)
    throw invalid(`seen-at time ${record.seenAtMs} is not a Unix time in ms`);
  return { ...key, digest: validateDigest(record.digest), mediaType: record.mediaType, size: record.size, seenAtMs: record.seenAtMs };
}

/**
 * Checks a notice's change against its own geometry (the agent checks it against its copy's): sizes in
 * bounds, every partial holder's bitmap as long as the pieces need, hashes 32 bytes each with distinct
 * indices in range. Throws ERR_TRACKER_INVALID_ARGUMENT naming what is wrong.
 */
export function validateBlobChange(change: BlobChange): BlobChange {
  const { size, pieceSize, holders, hashes } = change;
  if (!Number.isSafeInteger(size) || size < 0) throw invalid(`notice size ${size} is not a whole number of bytes`);
  if (!Number.isSafeInteger(pieceSize) || pieceSize < 1 || pieceSize > MAX_PIECE_SIZE_BYTES)
    throw invalid(`notice piece size ${pieceSize} is outside 1..${MAX_PIECE_SIZE_BYTES} bytes`);
  const pieces = pieceCount(size, pieceSize);
  if (pieces > MAX_PIECES_PER_BLOB) throw invalid(`notice of ${pieces} pieces; at most ${MAX_PIECES_PER_BLOB} are tracked`);
  const bitmapBytes = Math.ceil(pieces / 8);
  for (const holder of holders) {
    validateAgentId(holder.agentId);
    if (!holder.complete && holder.bitmap.length !== bitmapBytes)
      throw invalid(
        `notice holder ${holder.agentId.slice(0, 128)} has a bitmap of ${holder.bitmap.length} bytes; ${pieces} pieces need ${bitmapBytes}`,
      );
  }
  if (hashes.bytes.length !== hashes.indices.length * SHA256_BYTES)
    throw invalid(`notice has ${hashes.bytes.length} bytes of hashes for ${hashes.indices.length} pieces`);
  const seen = new Uint8Array(pieces);
  for (let i = 0; i < hashes.indices.length; i++) {
    const index = hashes.indices[i] ?? -1;
    if (!Number.isInteger(index) || index < 0 || index >= pieces) throw invalid(`notice hash index ${index} outside 0..${pieces - 1}`);
    if (seen[index] === 1) throw invalid(`notice hash ${index} given twice`);
    seen[index] = 1;
  }
  return change;
}
