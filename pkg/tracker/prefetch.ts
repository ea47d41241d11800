import type { Digest } from "../oci/index.js";
import { TrackerError } from "./errors.js";
import { validateDigest } from "./validation.js";

/**
 * The prefetch part of the session protocol: the controller assigns content to an agent (an
 * ImagePrefetch's seeds), the agent reports its progress. Agents fetch through their normal path, so
 * the origin still sends each blob about once.
 */

/** What the controller asks one agent to hold. A new content set comes with a new id. */
export interface PrefetchAssignment {
  readonly id: string;
  readonly contents: readonly PrefetchContent[];
}

/** What to hold of one image in one repository of one registry. */
export interface PrefetchContent {
  /** Registry host as in image references, e.g. `ghcr.io`. */
  readonly registry: string;
  readonly repository: string;
  /** Index and platform manifests with their exact bytes: verified and stored, never fetched. */
  readonly manifests: readonly PrefetchManifest[];
  /** Configs and layers, fetched through the swarm. */
  readonly blobs: readonly PrefetchBlob[];
  /** For this content's origin fetches from `registry` only; never logged, never stored. */
  readonly credentials?: { readonly username: string; readonly password: string } | undefined;
}

export interface PrefetchManifest {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly body: Uint8Array;
}

export interface PrefetchBlob {
  readonly digest: Digest;
  readonly size: number;
}

export type PrefetchState = "running" | "done" | "failed";

/** An agent's progress on an assignment. */
export interface PrefetchReport {
  readonly id: string;
  readonly state: PrefetchState;
  /** Manifests and blobs held so far, of the assignment's total. */
  readonly itemsDone: number;
  readonly itemsTotal: number;
  /** Bytes of the blobs held so far by where each blob's fetch got them. */
  readonly bytesFromOrigin: number;
  readonly bytesFromPeers: number;
  readonly bytesAlreadyHeld: number;
  /** For "failed": a stable code (auth, not_found, store_full, digest_mismatch, …) and a message for people. */
  readonly error?: { readonly code: string; readonly message: string } | undefined;
}

/** What the tracker sends an agent besides `registered`. */
export type AgentCommand =
  { readonly kind: "prefetch"; readonly assignment: PrefetchAssignment } | { readonly kind: "prefetch-cancel"; readonly id: string };

/**
 * The agent's side of the prefetch channel (GrpcTrackerClient implements it): commands arrive from the
 * tracker, reports go back. `onSessionLost` fires when the session that carried assignments ends: they
 * are cancelled then, and the tracker assigns again on the next session.
 */
export interface PrefetchChannel {
  setPrefetchHandler(handler: PrefetchHandler | undefined): void;
  /** Sends the report when a session is up; dropped otherwise (the next assignment asks again). */
  reportPrefetch(report: PrefetchReport): void;
}

export interface PrefetchHandler {
  onCommand(command: AgentCommand): void;
  onSessionLost(): void;
}

/** Longest assignment id (the controller uses a resource uid and a content hash). */
export const MAX_PREFETCH_ID_LENGTH = 128;
/** Manifest bytes one assignment may carry: far above real images, well under gRPC's 4 MiB message limit. */
export const MAX_PREFETCH_MANIFEST_BYTES = 2 * 1024 * 1024;
/** Manifests and blobs one assignment may name. */
export const MAX_PREFETCH_ITEMS = 4096;
const MAX_ERROR_CODE_LENGTH = 64;
const MAX_ERROR_MESSAGE_LENGTH = 1024;
const MAX_CREDENTIAL_LENGTH = 4096;
const MAX_MEDIA_TYPE_LENGTH = 255;
const MAX_REGISTRY_LENGTH = 261;
const MAX_REPOSITORY_LENGTH = 255;
const PRINTABLE = /^[\x21-\x7e]+$/;

function invalid(message: string): TrackerError {
  return new TrackerError("ERR_TRACKER_INVALID_ARGUMENT", message);
}

function checkToken(what: string, value: string, max: number): void {
  if (value === "") throw invalid(`${what} is empty`);
  if (value.length > max) throw invalid(`${what} is longer than ${max} characters`);
  if (!PRINTABLE.test(value)) throw invalid(`${what} ${JSON.stringify(value.slice(0, 80))} contains spaces or non-ASCII characters`);
}

export function validatePrefetchId(id: string): string {
  checkToken("prefetch id", id, MAX_PREFETCH_ID_LENGTH);
  return id;
}

/** Throws ERR_TRACKER_INVALID_ARGUMENT unless every part is present, bounded and well-formed. */
export function validatePrefetchAssignment(assignment: PrefetchAssignment): PrefetchAssignment {
  const id = validatePrefetchId(assignment.id);
  let manifestBytes = 0;
  let items = 0;
  const contents = assignment.contents.map((content) => {
    checkToken("registry", content.registry, MAX_REGISTRY_LENGTH);
    checkToken("repository", content.repository, MAX_REPOSITORY_LENGTH);
    const manifests = content.manifests.map((m) => {
      checkToken("media type", m.mediaType, MAX_MEDIA_TYPE_LENGTH);
      manifestBytes += m.body.length;
      return { digest: validateDigest(m.digest), mediaType: m.mediaType, body: m.body };
    });
    const blobs = content.blobs.map((b) => {
      if (!Number.isSafeInteger(b.size) || b.size < 0) throw invalid(`size ${b.size} of ${b.digest} is not a byte count`);
      return { digest: validateDigest(b.digest), size: b.size };
    });
    items += manifests.length + blobs.length;
    const credentials = content.credentials;
    if (
      credentials !== undefined &&
      (credentials.username.length > MAX_CREDENTIAL_LENGTH || credentials.password.length > MAX_CREDENTIAL_LENGTH)
    ) {
      throw invalid(`credentials for ${content.registry} are longer than ${MAX_CREDENTIAL_LENGTH} characters`);
    }
    return { registry: content.registry, repository: content.repository, manifests, blobs, credentials };
  });
  if (manifestBytes > MAX_PREFETCH_MANIFEST_BYTES)
    throw invalid(`prefetch ${id} carries ${manifestBytes} bytes of manifests; at most ${MAX_PREFETCH_MANIFEST_BYTES}`);
  if (items > MAX_PREFETCH_ITEMS) throw invalid(`prefetch ${id} names ${items} manifests and blobs; at most ${MAX_PREFETCH_ITEMS}`);
  return { id, contents };
}

export function validatePrefetchReport(report: PrefetchReport): PrefetchReport {
  const id = validatePrefetchId(report.id);
  for (const [what, value] of [
    ["items done", report.itemsDone],
    ["items total", report.itemsTotal],
    ["bytes from origin", report.bytesFromOrigin],
    ["bytes from peers", report.bytesFromPeers],
    ["bytes already held", report.bytesAlreadyHeld],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 0) throw invalid(`${what} ${value} of prefetch ${id} is not a count`);
  }
  if (report.itemsDone > report.itemsTotal) throw invalid(`prefetch ${id} reports ${report.itemsDone} of ${report.itemsTotal} items`);
  let error: PrefetchReport["error"];
  if (report.state === "failed") {
    const code = report.error?.code ?? "";
    checkToken("error code", code === "" ? "unknown" : code, MAX_ERROR_CODE_LENGTH);
    const message = (report.error?.message ?? "").slice(0, MAX_ERROR_MESSAGE_LENGTH);
    error = { code: code === "" ? "unknown" : code, message };
  }
  return { ...report, id, error };
}
