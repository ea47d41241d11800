import type { Digest } from "../oci/index.js";

/** Who an agent is, as it registers with the tracker. */
export interface AgentIdentity {
  /** Unique per agent process start. */
  readonly agentId: string;
  readonly nodeName: string;
  /** topology.kubernetes.io/zone; "" when unknown. */
  readonly zone: string;
  /** host:port of the agent's PeerService. */
  readonly peerAddress: string;
}

/** What an agent holds of one blob; a later announcement of the same digest replaces the earlier one. */
export interface BlobAnnouncement {
  readonly digest: Digest;
  readonly size: number;
  readonly pieceSize: number;
  readonly complete: boolean;
  /** Held pieces (PieceBitmap byte order); ignored when complete. */
  readonly bitmap?: Uint8Array;
  /** SHA-256 (32 bytes) of pieces the agent verified, or computed from the origin's bytes as grantee. */
  readonly pieceHashes?: readonly { readonly index: number; readonly sha256: Uint8Array }[];
  /** The same, packed (as the tracker keeps and receives them); give one form or the other. */
  readonly packedHashes?: PackedPieceHashes;
}

/**
 * Piece hashes packed: the piece indices, and their SHA-256 concatenated in the same order (32 bytes
 * each). Two objects however many pieces, where a list costs two per piece: a tracker receives millions.
 */
export interface PackedPieceHashes {
  readonly indices: ArrayLike<number>;
  readonly bytes: Uint8Array;
}

export interface HolderInfo extends AgentIdentity {
  readonly complete: boolean;
  /** Empty when complete. */
  readonly bitmap: Uint8Array;
  readonly activeUploads: number;
}

export interface LookupResult {
  /** 0 when nobody has announced the blob. */
  readonly size: number;
  readonly pieceSize: number;
  /** Ranked: same node, then same zone, then least loaded; never the asking agent. */
  readonly holders: readonly HolderInfo[];
  /** Index-aligned; undefined where not known yet. */
  readonly pieceHashes: readonly (Uint8Array | undefined)[];
  /** The zone the tracker ranks the asking agent by (Kubernetes: its Node's label); "" when unknown. */
  readonly askerZone: string;
  /** Whether the asking agent holds the origin grant, and who does. */
  readonly origin: { readonly granted: boolean; readonly granteeAgentId: string | undefined };
  /**
   * Set (milliseconds) while the tracker is still rebuilding its state from agents re-announcing after a
   * fail-over and therefore granted nothing: holders may still appear, so ask again after this long
   * instead of going to the origin. Absent otherwise.
   */
  readonly retryAfterMs?: number;
}

/**
 * What a BlobChanged notice says changed of a blob since the agent's last lookup of it (or the last notice
 * with a change), as a lookup would answer it now: merged into what the agent knows, it saves the lookup.
 * A notice without one (undefined) means "look it up".
 */
export interface BlobChange {
  /** The geometry of the claim the agent's lookups are answered with. */
  readonly size: number;
  readonly pieceSize: number;
  /** Holders whose announces changed the blob, never the agent itself; its other holders are unchanged. */
  readonly holders: readonly HolderInfo[];
  /** Piece hashes the tracker accepted since (indices below the piece count, 32 bytes each). */
  readonly hashes: PackedPieceHashes;
  /** Who holds the origin grant now; undefined when nobody does. */
  readonly granteeAgentId: string | undefined;
}

/** Called per BlobChanged notice of a watched digest: with what changed, or undefined (look the blob up). */
export type BlobChangeListener = (change: BlobChange | undefined) => void;

/** A tag in one repository of one registry. */
export interface TagKey {
  /** Registry host as in image references, e.g. `ghcr.io`. */
  readonly registry: string;
  readonly repository: string;
  readonly tag: string;
}

/** The digest an agent resolved a tag to at the upstream registry, and when. */
export interface TagRecord extends TagKey {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly size: number;
  /** Unix milliseconds; the newest record of a tag wins. */
  readonly seenAtMs: number;
}

export interface LookupOptions {
  readonly wantOriginGrant: boolean;
  /** Holders this agent dropped for the blob (bad pieces): their complete copies do not block its grant. */
  readonly excludedAgents?: readonly string[];
  /** The blob's size as this agent knows it (a manifest's descriptor): only a claim of that size is answered with. */
  readonly expectedSize?: number;
  readonly signal?: AbortSignal;
}

/**
 * The agent's view of the tracker. Implementations: GrpcTrackerClient (a session stream to the
 * controller, reconnecting with backoff and re-announcing the whole inventory), LocalTracker (in
 * process, over a MemoryTracker; tests and single-process demos). Both pass the conformance suite.
 */
export interface Tracker {
  /**
   * Holders of a blob and the origin decision. With `wantOriginGrant`, the asking agent is granted the
   * origin fetch when nobody holds the whole blob and no other live agent is fetching it (or the one that
   * was has stalled). Throws TrackerError ERR_TRACKER_UNAVAILABLE when the tracker cannot be reached.
   */
  lookup(digest: Digest, options: LookupOptions): Promise<LookupResult>;
  /** Records the announcement in the local inventory and sends it when connected (again after every reconnect). */
  announce(announcement: BlobAnnouncement): void;
  /** Drops a blob from the inventory (evicted, deleted, abandoned) and tells the tracker. */
  withdraw(digest: Digest): void;
  /**
   * Tells the cluster which digest a tag resolved to upstream. Kept (newest per tag, bounded) and sent
   * again after every reconnect, like the blob inventory. Throws ERR_TRACKER_INVALID_ARGUMENT when malformed.
   */
  publishTag(record: TagRecord): void;
  /**
   * The newest digest any agent published for the tag, or undefined when none did. Throws
   * ERR_TRACKER_UNAVAILABLE when the tracker cannot be reached.
   */
  resolveTag(key: TagKey, signal?: AbortSignal): Promise<TagRecord | undefined>;
  /**
   * Calls `listener` whenever the tracker says `digest` changed (BlobChanged: another agent announced a new
   * copy, pieces or hashes of it, or its origin grant was released), with the change when the notice
   * carried it (BlobChange), else undefined: look the blob up. The tracker tells only agents that
   * looked the blob up within the last few seconds, so a listener must keep looking it up now and then
   * (slowly: see `sendsNotices`). Returns the function that ends the subscription; call it on every exit.
   */
  watchBlob(digest: Digest, listener: BlobChangeListener): () => void;
  /**
   * Whether the tracker of the current session sends notices. False without a session and with a tracker
   * from before notices: callers then poll at the old pace.
   */
  readonly sendsNotices: boolean;
  /** The load this agent reports in heartbeats. */
  setActiveUploads(count: number): void;
  readonly connected: boolean;
  close(): Promise<void>;
}
