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
   * Takes a slot for one request on `session`; RESOURCE_EXHAUSTED when the node-wide or the per-connection
   * cap is full. Returns the slot's release (idempotent).
   */
  acquire(session: Http2Session | undefined): () => void {
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
}
