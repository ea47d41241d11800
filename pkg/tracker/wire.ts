import type { Digest } from "../oci/index.js";
import {
  type Announce,
  type BlobChanged,
  type BlobDelta,
  type Holder,
  type LookupResponse,
  type PrefetchAssignment as WirePrefetchAssignment,
  type PrefetchReport as WirePrefetchReport,
  PrefetchState as WirePrefetchState,
  type Register,
  type SessionRequest,
  type SessionResponse,
  type TagRecord as WireTagRecord,
} from "../gen/tracker/v1/tracker.js";
import type { AgentCommand, PrefetchAssignment, PrefetchReport, PrefetchState } from "./prefetch.js";
import {
  type AgentIdentity,
  type BlobAnnouncement,
  type BlobChange,
  type HolderInfo,
  type LookupResult,
  type TagRecord,
} from "./tracker.js";
import { TrackerError } from "./errors.js";
import { SHA256_BYTES, validateBlobChange, validateDigest } from "./validation.js";

/** Conversions between the generated protobuf messages and the Tracker types; the only place that knows both. */

/**
 * `resumeBlobs`: how many blobs the agent is about to re-announce on this session (Register.resume_blobs).
 * `acceptsNotices`: the agent takes BlobChanged notices (Register.accepts_notices).
 */
export function registerRequest(identity: AgentIdentity, resumeBlobs = 0, acceptsNotices = false): SessionRequest {
  const value: Register = {
    agentId: identity.agentId,
    nodeName: identity.nodeName,
    zone: identity.zone,
    peerAddress: identity.peerAddress,
    resumeBlobs,
    acceptsNotices,
  };
  return { kind: { $case: "register", value } };
}

export function announceRequest(announcement: BlobAnnouncement): SessionRequest {
  return announceMessage(announcement, packedToWire(announcement));
}

/** The announce message with its piece hashes already in their wire form. */
function announceMessage(announcement: BlobAnnouncement, hashes: { hashIndices: number[]; hashBytes: Buffer }): SessionRequest {
  const value: Announce = {
    digest: announcement.digest,
    size: announcement.size,
    pieceSize: announcement.pieceSize,
    complete: announcement.complete,
    bitmap: announcement.complete || announcement.bitmap === undefined ? Buffer.alloc(0) : toBuffer(announcement.bitmap),
    pieceHashes: [],
    ...hashes,
  };
  return { kind: { $case: "announce", value } };
}

/**
 * Piece hashes per announce message on the wire: a blob with more pieces (over 32 GiB) is announced in
 * several messages with the same state, so no session message comes near MAX_SESSION_MESSAGE_BYTES.
 */
export const MAX_HASHES_PER_MESSAGE = 2048;
/**
 * The tracker's limit on one message from an agent (2048 hashes are ~90 KB; the largest bitmap is 8 KiB).
 * Decoded messages wait in a session's queue, so this bounds what one session can make the tracker
 * buffer before its budget is checked; a larger message ends the session with RESOURCE_EXHAUSTED.
 */
export const MAX_SESSION_MESSAGE_BYTES = 256 * 1024;

/** The announcement's piece hashes in the packed wire fields (either form in, one buffer out). */
function packedToWire(announcement: BlobAnnouncement): { hashIndices: number[]; hashBytes: Buffer } {
  const { packedHashes, pieceHashes } = announcement;
  if (packedHashes !== undefined && packedHashes.indices.length > 0)
    return { hashIndices: Array.from(packedHashes.indices), hashBytes: toBuffer(packedHashes.bytes) };
  const list = pieceHashes ?? [];
  const hashBytes = Buffer.allocUnsafe(list.length * SHA256_BYTES);
  list.forEach((h, i) => {
    hashBytes.set(h.sha256, i * SHA256_BYTES);
  });
  return { hashIndices: list.map((h) => h.index), hashBytes };
}

/** announceRequest, split into messages of at most MAX_HASHES_PER_MESSAGE piece hashes each. */
export function announceRequests(announcement: BlobAnnouncement): SessionRequest[] {
  const hashes = packedToWire(announcement);
  const { hashIndices, hashBytes } = hashes;
  if (hashIndices.length <= MAX_HASHES_PER_MESSAGE) return [announceMessage(announcement, hashes)];
  const requests: SessionRequest[] = [];
  for (let start = 0; start < hashIndices.length; start += MAX_HASHES_PER_MESSAGE) {
    const end = Math.min(start + MAX_HASHES_PER_MESSAGE, hashIndices.length);
    requests.push(
      announceMessage(announcement, {
        hashIndices: hashIndices.slice(start, end),
        hashBytes: hashBytes.subarray(start * SHA256_BYTES, end * SHA256_BYTES),
      }),
    );
  }
  return requests;
}

/** A BlobChanged notice: `digest` changed since the agent last looked it up; with `change`, what changed. */
export function noticeResponse(digest: Digest, change?: BlobChange): SessionResponse {
  if (change === undefined) return { kind: { $case: "blobChanged", value: { digest } } };
  const delta: BlobDelta = {
    size: change.size,
    pieceSize: change.pieceSize,
    holders: change.holders.map(holderToWire),
    hashIndices: Array.from(change.hashes.indices),
    hashBytes: toBuffer(change.hashes.bytes),
    granteeAgentId: change.granteeAgentId ?? "",
  };
  return { kind: { $case: "blobChanged", value: { digest, delta } } };
}

/**
 * A notice as the agent takes it: its digest, and its change when it carried one. Throws
 * ERR_TRACKER_INVALID_ARGUMENT for a bad digest; a delta that does not fit its own geometry (a bitmap of
 * the wrong length, a hash not 32 bytes, an index out of range) comes back as `malformed` with no change:
 * the agent looks the blob up instead.
 */
export function noticeFromWire(notice: BlobChanged): { digest: Digest; change: BlobChange | undefined; malformed?: string } {
  const digest = validateDigest(notice.digest);
  const delta = notice.delta;
  if (delta === undefined) return { digest, change: undefined };
  try {
    const change = validateBlobChange({
      size: delta.size,
      pieceSize: delta.pieceSize,
      holders: delta.holders.map(holderFromWire),
      hashes: { indices: delta.hashIndices, bytes: new Uint8Array(delta.hashBytes) },
      granteeAgentId: delta.granteeAgentId === "" ? undefined : delta.granteeAgentId,
    });
    return { digest, change };
  } catch (error: unknown) {
    return { digest, change: undefined, malformed: error instanceof Error ? error.message : String(error) };
  }
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
    // Agents from before packed hashes send a list (each hash decoded into objects of its own, read as they are).
    ...(announce.hashIndices.length > 0 || announce.hashBytes.length > 0
      ? { packedHashes: { indices: announce.hashIndices, bytes: announce.hashBytes } }
      : { pieceHashes: announce.pieceHashes }),
  };
}

/**
 * Wire forms of a piece-hash list, per list: the tracker answers every lookup of a blob with the same
 * list until a new hash arrives, so thousands of lookups share one conversion.
 */
const wireHashes = new WeakMap<readonly (Uint8Array | undefined)[], Buffer[]>();

function hashesToWire(hashes: readonly (Uint8Array | undefined)[]): Buffer[] {
  let wire = wireHashes.get(hashes);
  if (wire === undefined) {
    wire = hashes.map((h) => (h === undefined ? EMPTY : toBuffer(h)));
    wireHashes.set(hashes, wire);
  }
  return wire;
}

const EMPTY = Buffer.alloc(0);

export function lookupResponse(result: LookupResult): LookupResponse {
  return {
    size: result.size,
    pieceSize: result.pieceSize,
    holders: result.holders.map(holderToWire),
    pieceHashes: hashesToWire(result.pieceHashes),
    origin: { granted: result.origin.granted, granteeAgentId: result.origin.granteeAgentId ?? "" },
    askerZone: result.askerZone,
    retryAfterMs: result.retryAfterMs ?? 0,
  };
}

function holderToWire(h: HolderInfo): Holder {
  return {
    agentId: h.agentId,
    nodeName: h.nodeName,
    zone: h.zone,
    peerAddress: h.peerAddress,
    complete: h.complete,
    bitmap: toBuffer(h.bitmap),
    activeUploads: h.activeUploads,
  };
}

function holderFromWire(h: Holder): HolderInfo {
  return {
    agentId: h.agentId,
    nodeName: h.nodeName,
    zone: h.zone,
    peerAddress: h.peerAddress,
    complete: h.complete,
    bitmap: new Uint8Array(h.bitmap),
    activeUploads: h.activeUploads,
  };
}

/** Byte fields become plain Uint8Arrays so results compare equal whichever Tracker produced them. */
export function lookupResultFromWire(response: LookupResponse): LookupResult {
  const grantee = response.origin?.granteeAgentId ?? "";
  return {
    size: response.size,
    pieceSize: response.pieceSize,
    holders: response.holders.map(holderFromWire),
    pieceHashes: response.pieceHashes.map((h) => (h.length === 0 ? undefined : new Uint8Array(h))),
    origin: { granted: response.origin?.granted ?? false, granteeAgentId: grantee === "" ? undefined : grantee },
    askerZone: response.askerZone,
    ...(response.retryAfterMs > 0 ? { retryAfterMs: response.retryAfterMs } : {}),
  };
}

/** A command for an agent as the session response that carries it. */
export function commandResponse(command: AgentCommand): SessionResponse {
  if (command.kind === "prefetch-cancel") return { kind: { $case: "prefetchCancel", value: { id: command.id } } };
  const value: WirePrefetchAssignment = {
    id: command.assignment.id,
    contents: command.assignment.contents.map((c) => ({
      registry: c.registry,
      repository: c.repository,
      manifests: c.manifests.map((m) => ({ digest: m.digest, mediaType: m.mediaType, body: toBuffer(m.body) })),
      blobs: c.blobs.map((b) => ({ digest: b.digest, size: b.size })),
      credentials: c.credentials === undefined ? undefined : { username: c.credentials.username, password: c.credentials.password },
    })),
  };
  return { kind: { $case: "prefetch", value } };
}

/**
 * The command a session response carries, or undefined for `registered` and kinds this agent does not
 * know. Throws ERR_TRACKER_INVALID_ARGUMENT for a bad digest; the rest is checked by validatePrefetchAssignment.
 */
export function commandFromWire(response: SessionResponse): AgentCommand | undefined {
  const kind = response.kind;
  if (kind?.$case === "prefetchCancel") return { kind: "prefetch-cancel", id: kind.value.id };
  if (kind?.$case !== "prefetch") return undefined;
  const assignment: PrefetchAssignment = {
    id: kind.value.id,
    contents: kind.value.contents.map((c) => ({
      registry: c.registry,
      repository: c.repository,
      manifests: c.manifests.map((m) => ({ digest: validateDigest(m.digest), mediaType: m.mediaType, body: new Uint8Array(m.body) })),
      blobs: c.blobs.map((b) => ({ digest: validateDigest(b.digest), size: b.size })),
      credentials: c.credentials === undefined ? undefined : { username: c.credentials.username, password: c.credentials.password },
    })),
  };
  return { kind: "prefetch", assignment };
}

const STATES: Record<PrefetchState, WirePrefetchState> = {
  running: WirePrefetchState.PREFETCH_STATE_RUNNING,
  done: WirePrefetchState.PREFETCH_STATE_DONE,
  failed: WirePrefetchState.PREFETCH_STATE_FAILED,
};

export function prefetchReportRequest(report: PrefetchReport): SessionRequest {
  const value: WirePrefetchReport = {
    id: report.id,
    state: STATES[report.state],
    itemsDone: report.itemsDone,
    itemsTotal: report.itemsTotal,
    bytesFromOrigin: report.bytesFromOrigin,
    bytesFromPeers: report.bytesFromPeers,
    bytesAlreadyHeld: report.bytesAlreadyHeld,
    errorCode: report.error?.code ?? "",
    errorMessage: report.error?.message ?? "",
  };
  return { kind: { $case: "prefetchReport", value } };
}

/** Throws ERR_TRACKER_INVALID_ARGUMENT for a state this tracker does not know. */
export function prefetchReportFromWire(report: WirePrefetchReport): PrefetchReport {
  const state = (Object.keys(STATES) as PrefetchState[]).find((s) => STATES[s] === report.state);
  if (state === undefined)
    throw new TrackerError(
      "ERR_TRACKER_INVALID_ARGUMENT",
      `prefetch report ${report.id.slice(0, 128)} has an unknown state ${report.state}`,
    );
  return {
    id: report.id,
    state,
    itemsDone: report.itemsDone,
    itemsTotal: report.itemsTotal,
    bytesFromOrigin: report.bytesFromOrigin,
    bytesFromPeers: report.bytesFromPeers,
    bytesAlreadyHeld: report.bytesAlreadyHeld,
    error: state === "failed" ? { code: report.errorCode, message: report.errorMessage } : undefined,
  };
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
