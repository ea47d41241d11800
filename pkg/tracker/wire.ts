import type { Digest } from "../oci/index.js";
import type { Announce, LookupResponse, Register, SessionRequest, TagRecord as WireTagRecord } from "../gen/tracker/v1/tracker.js";
import { type AgentIdentity, type BlobAnnouncement, type LookupResult, type TagRecord } from "./tracker.js";
import { validateDigest } from "./validation.js";

/** Conversions between the generated protobuf messages and the Tracker types; the only place that knows both. */

export function registerRequest(identity: AgentIdentity): SessionRequest {
  const value: Register = { agentId: identity.agentId, nodeName: identity.nodeName, zone: identity.zone, peerAddress: identity.peerAddress };
  return { kind: { $case: "register", value } };
}

export function announceRequest(announcement: BlobAnnouncement): SessionRequest {
  const value: Announce = {
    digest: announcement.digest,
    size: announcement.size,
    pieceSize: announcement.pieceSize,
    complete: announcement.complete,
    bitmap: announcement.complete || announcement.bitmap === undefined ? Buffer.alloc(0) : toBuffer(announcement.bitmap),
    pieceHashes: (announcement.pieceHashes ?? []).map((h) => ({ index: h.index, sha256: toBuffer(h.sha256) })),
  };
  return { kind: { $case: "announce", value } };
}

export function withdrawRequest(digest: Digest): SessionRequest {
  return { kind: { $case: "withdraw", value: { digest } } };
}

export function heartbeatRequest(activeUploads: number): SessionRequest {
  return { kind: { $case: "heartbeat", value: { activeUploads } } };
}

export function tagRecordToWire(record: TagRecord): WireTagRecord {
  return {
    registry: record.registry,
    repository: record.repository,
    tag: record.tag,
    digest: record.digest,
    mediaType: record.mediaType,
    size: record.size,
    seenAtUnixMs: record.seenAtMs,
  };
}

export function tagSeenRequest(record: TagRecord): SessionRequest {
  return { kind: { $case: "tagSeen", value: tagRecordToWire(record) } };
}

/** Throws ERR_TRACKER_INVALID_ARGUMENT for a bad digest; the rest is checked by validateTagRecord. */
export function tagRecordFromWire(record: WireTagRecord): TagRecord {
  return {
    registry: record.registry,
    repository: record.repository,
    tag: record.tag,
    digest: validateDigest(record.digest),
    mediaType: record.mediaType,
    size: record.size,
    seenAtMs: record.seenAtUnixMs,
  };
}

export function identityFromWire(register: Register): AgentIdentity {
  return { agentId: register.agentId, nodeName: register.nodeName, zone: register.zone, peerAddress: register.peerAddress };
}

/** Throws ERR_TRACKER_INVALID_ARGUMENT for a bad digest; the rest is checked by validateAnnouncement. */
export function announcementFromWire(announce: Announce): BlobAnnouncement {
  return {
    digest: validateDigest(announce.digest),
    size: announce.size,
    pieceSize: announce.pieceSize,
    complete: announce.complete,
    bitmap: announce.bitmap,
    pieceHashes: announce.pieceHashes.map((h) => ({ index: h.index, sha256: h.sha256 })),
  };
}

export function lookupResponse(result: LookupResult): LookupResponse {
  return {
    size: result.size,
    pieceSize: result.pieceSize,
    holders: result.holders.map((h) => ({
      agentId: h.agentId,
      nodeName: h.nodeName,
      zone: h.zone,
      peerAddress: h.peerAddress,
      complete: h.complete,
      bitmap: toBuffer(h.bitmap),
      activeUploads: h.activeUploads,
    })),
    pieceHashes: result.pieceHashes.map((h) => (h === undefined ? Buffer.alloc(0) : toBuffer(h))),
    origin: { granted: result.origin.granted, granteeAgentId: result.origin.granteeAgentId ?? "" },
    askerZone: result.askerZone,
  };
}

/** Byte fields become plain Uint8Arrays so results compare equal whichever Tracker produced them. */
export function lookupResultFromWire(response: LookupResponse): LookupResult {
  const grantee = response.origin?.granteeAgentId ?? "";
  return {
    size: response.size,
    pieceSize: response.pieceSize,
    holders: response.holders.map((h) => ({
      agentId: h.agentId,
      nodeName: h.nodeName,
      zone: h.zone,
      peerAddress: h.peerAddress,
      complete: h.complete,
      bitmap: new Uint8Array(h.bitmap),
      activeUploads: h.activeUploads,
    })),
    pieceHashes: response.pieceHashes.map((h) => (h.length === 0 ? undefined : new Uint8Array(h))),
    origin: { granted: response.origin?.granted ?? false, granteeAgentId: grantee === "" ? undefined : grantee },
    askerZone: response.askerZone,
  };
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
