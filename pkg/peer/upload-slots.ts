import type { Http2Session } from "node:http2";
import type { AgentMetrics } from "../metrics/index.js";
import { PeerStatus } from "./grpc-status.js";
import { GrpcStatus } from "./grpc-wire.js";

export const DEFAULT_MAX_CONCURRENT_UPLOADS = 16;
/**
 * Of the upload slots, one connection (one peer) may hold at most this share: a peer that opens calls and
 * never reads them cannot lock out the others (with 16 slots, 4 per connection). A downloader keeps at most
 * a few calls in flight per peer, so honest peers never reach it.
 */
const MAX_UPLOAD_SHARE_PER_CONNECTION = 0.25;
/**
 * A request for at most this many bytes (an image config, a small layer: one short piece) is served
 * beside the upload slots, in a small pool of its own, so it is not refused while layer pieces hold every
 * slot. The runtime waits on such blobs before it can use the big ones, and while a grantee's slots are
 * all taken by layer pieces its peers would otherwise be refused a 1 KB config for seconds (on a busy
 * machine, until the mirror gave up and sent the runtime to the origin).
 */
export const SMALL_READ_BYTES = 256 * 1024;
/** Small requests served beside the slots at once, node-wide and per connection (at most 8 MiB and 1 MiB of them). */
const MAX_SMALL_READS = 32;
const MAX_SMALL_READS_PER_CONNECTION = 4;

/** Frees an upload slot (idempotent); `small`: it came from the small-read pool (SMALL_READ_BYTES). */
export type SlotRelease = (() => void) & { readonly small: boolean };

/**
 * The upload slots of one PeerServer: each request being served (a ReadPieces call or an Exchange read)
 * holds one, counted against the node-wide cap and its connection's share of it.
 */
export class UploadSlots {
  /** The node-wide cap. */
  readonly max: number;
  private readonly maxPerConnection: number;
  private readonly slots = new HeldCounts();
  /** Small requests served beside the slots (SMALL_READ_BYTES). */
  private readonly small = new HeldCounts();

  constructor(
    max: number,
    private readonly metrics: AgentMetrics | undefined,
  ) {
    if (!(Number.isSafeInteger(max) && max > 0)) {
      throw new RangeError(`maxConcurrentUploads must be a positive integer, got ${max}`);
    }
    this.max = max;
    this.maxPerConnection = Math.max(2, Math.floor(max * MAX_UPLOAD_SHARE_PER_CONNECTION));
  }

  /** Slots held now (reported to the tracker as this agent's load). */
  get inUse(): number {
    return this.slots.total;
  }

  /**
   * Takes a slot for one request of `bytes` on `session`; RESOURCE_EXHAUSTED when the node-wide or the
   * per-connection cap is full. Returns the slot's release (idempotent). A small request (SMALL_READ_BYTES)
   * is served from the small pool while it has room (for the node and for its connection), and takes a
   * slot like any other beyond it; the release's `small` says which.
   */
  acquire(session: Http2Session | undefined, bytes: number): SlotRelease {
    if (bytes <= SMALL_READ_BYTES && this.small.total < MAX_SMALL_READS && this.small.of(session) < MAX_SMALL_READS_PER_CONNECTION) {
      return Object.assign(this.small.take(session), { small: true });
    }
    const held = this.slots.of(session);
    if (this.slots.total >= this.max || held >= this.maxPerConnection) {
      this.metrics?.peerUploadsRejected.inc();
      const which =
        this.slots.total >= this.max ? `upload cap reached (${this.max} streams)` : `this connection holds ${held} upload streams already`;
      throw new PeerStatus(GrpcStatus.RESOURCE_EXHAUSTED, which);
    }
    this.metrics?.peerUploadsActive.inc();
    return Object.assign(
      this.slots.take(session, () => this.metrics?.peerUploadsActive.dec()),
      { small: false },
    );
  }
}

/** Requests held in one pool: in all, and per connection. */
class HeldCounts {
  total = 0;
  private readonly perConnection = new Map<Http2Session, number>();

  /** Held by `session` (0 for requests without a connection). */
  of(session: Http2Session | undefined): number {
    return session === undefined ? 0 : (this.perConnection.get(session) ?? 0);
  }

  /** Counts one more request on `session`; returns its release (idempotent), which also calls `released` once. */
  take(session: Http2Session | undefined, released?: () => void): () => void {
    this.total++;
    if (session !== undefined) this.perConnection.set(session, this.of(session) + 1);
    let holding = true;
    return () => {
      if (!holding) return;
      holding = false;
      this.total--;
      if (session !== undefined) {
        const left = this.of(session) - 1;
        if (left > 0) this.perConnection.set(session, left);
        else this.perConnection.delete(session);
      }
      released?.();
    };
  }
}
