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

/**
 * The upload slots of one PeerServer: each request being served (a ReadPieces call or an Exchange read)
 * holds one, counted against the node-wide cap and its connection's share of it.
 */
export class UploadSlots {
  /** The node-wide cap. */
  readonly max: number;
  private readonly maxPerConnection: number;
  private active = 0;
  /** Slots held per connection. */
  private readonly perConnection = new Map<Http2Session, number>();
  /** Small requests served beside the slots (SMALL_READ_BYTES), in all and per connection. */
  private small = 0;
  private readonly smallPerConnection = new Map<Http2Session, number>();

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
    return this.active;
  }

  /**
   * Takes a slot for one request of `bytes` on `session`; RESOURCE_EXHAUSTED when the node-wide or the
   * per-connection cap is full. Returns the slot's release (idempotent). A small request (SMALL_READ_BYTES)
   * is served from the small pool while it has room (for the node and for its connection), and takes a
   * slot like any other beyond it.
   */
  acquire(session: Http2Session | undefined, bytes: number): () => void {
    if (bytes <= SMALL_READ_BYTES) {
      const release = this.acquireSmall(session);
      if (release !== undefined) return release;
    }
    const held = session === undefined ? 0 : (this.perConnection.get(session) ?? 0);
    if (this.active >= this.max || held >= this.maxPerConnection) {
      this.metrics?.peerUploadsRejected.inc();
      const which =
        this.active >= this.max ? `upload cap reached (${this.max} streams)` : `this connection holds ${held} upload streams already`;
      throw new PeerStatus(GrpcStatus.RESOURCE_EXHAUSTED, which);
    }
    this.active++;
    if (session !== undefined) this.perConnection.set(session, held + 1);
    this.metrics?.peerUploadsActive.inc();
    let holding = true;
    return () => {
      if (!holding) return;
      holding = false;
      this.active--;
      if (session !== undefined) {
        const left = (this.perConnection.get(session) ?? 1) - 1;
        if (left > 0) this.perConnection.set(session, left);
        else this.perConnection.delete(session);
      }
      this.metrics?.peerUploadsActive.dec();
    };
  }

  private acquireSmall(session: Http2Session | undefined): (() => void) | undefined {
    const held = session === undefined ? 0 : (this.smallPerConnection.get(session) ?? 0);
    if (this.small >= MAX_SMALL_READS || held >= MAX_SMALL_READS_PER_CONNECTION) return undefined;
    this.small++;
    if (session !== undefined) this.smallPerConnection.set(session, held + 1);
    let holding = true;
    return () => {
      if (!holding) return;
      holding = false;
      this.small--;
      if (session !== undefined) {
        const left = (this.smallPerConnection.get(session) ?? 1) - 1;
        if (left > 0) this.smallPerConnection.set(session, left);
        else this.smallPerConnection.delete(session);
      }
    };
  }
}
