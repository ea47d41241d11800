import type { Logger } from "pino";
import type { AgentMetrics } from "../metrics/index.js";
import { type Digest, digestAlgorithm, digestOf } from "../oci/index.js";
import type { ManifestPeers } from "../registry/index.js";
import { pieceCount } from "../piece/index.js";
import type { Tracker } from "../tracker/index.js";
import type { PieceSource } from "./piece-source.js";

/** Holders asked, in the tracker's ranking, before giving up and letting the caller use the origin. */
export const MANIFEST_PEER_ATTEMPTS = 3;
/** A holder that has not delivered a manifest (at most a few MiB) in this time is skipped. */
export const MANIFEST_PEER_TIMEOUT_MS = 3_000;

export interface TrackerManifestPeersOptions {
  readonly tracker: Tracker;
  readonly pieces: PieceSource;
  readonly metrics?: AgentMetrics | undefined;
  readonly logger: Logger;
  readonly attempts?: number;
  readonly timeoutMs?: number;
}

/** ManifestPeers over the tracker (who holds the digest complete) and the peer piece protocol. */
export class TrackerManifestPeers implements ManifestPeers {
  constructor(private readonly options: TrackerManifestPeersOptions) {}

  async fetch(digest: Digest, maxBytes: number, signal: AbortSignal): Promise<Buffer | undefined> {
    signal.throwIfAborted();
    if (!this.options.tracker.connected) return undefined;
    let lookup;
    try {
      lookup = await this.options.tracker.lookup(digest, { wantOriginGrant: false, signal });
    } catch (error) {
      signal.throwIfAborted();
      this.options.logger.debug({ err: error, digest }, "manifest lookup failed; the origin is asked instead");
      return undefined;
    }
    if (lookup.size <= 0 || lookup.size > maxBytes || lookup.pieceSize <= 0) return undefined;
    const holders = lookup.holders.filter((holder) => holder.complete).slice(0, this.options.attempts ?? MANIFEST_PEER_ATTEMPTS);
    const pieces = Array.from({ length: pieceCount(lookup.size, lookup.pieceSize) }, (_, index) => index);
    for (const holder of holders) {
      const attempt = AbortSignal.any([signal, AbortSignal.timeout(this.options.timeoutMs ?? MANIFEST_PEER_TIMEOUT_MS)]);
      try {
        const chunks: Buffer[] = [];
        let received = 0;
        for await (const piece of this.options.pieces.readPieces(
          holder.peerAddress,
          { digest, pieceSize: lookup.pieceSize, pieces, waitMs: 0 },
          attempt,
        )) {
          received += piece.data.length;
          // The piece's buffer is reused once released: keep a copy (manifests are small).
          if (received <= lookup.size) chunks.push(Buffer.from(piece.data));
          piece.release();
          if (received > lookup.size) break;
        }
        const body = Buffer.concat(chunks);
        if (body.length === lookup.size && digestOf(body, digestAlgorithm(digest)) === digest) return body;
        this.options.metrics?.digestMismatches.inc({ source: "peer" });
        this.options.logger.warn(
          { digest, peer: holder.peerAddress, bytes: body.length },
          "peer sent a manifest that does not match its digest",
        );
      } catch (error) {
        signal.throwIfAborted();
        this.options.logger.debug({ err: error, digest, peer: holder.peerAddress }, "manifest read from peer failed");
      }
    }
    return undefined;
  }
}
