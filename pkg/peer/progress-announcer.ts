import { PieceBitmap } from "../piece/index.js";
import type { PartialBlob } from "../store/index.js";
import type { Tracker } from "../tracker/index.js";
import { servableBitmap } from "./piece-reader.js";

/**
 * Tells the tracker what this agent holds of a blob it is fetching: the bitmap, and the hashes of the
 * pieces that became held since the last announce (as the store recorded them: checked against the
 * tracker's hash for pieces from peers, computed while writing for pieces from the origin). At most one
 * announce per `intervalMs`; the first piece goes out at once, so peers waiting for the blob learn its
 * size and this agent's address. Used by the origin grantee and the peer download alike.
 */
export class ProgressAnnouncer {
  private readonly announced: PieceBitmap;
  private lastMs = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly tracker: Tracker,
    private readonly partial: PartialBlob,
    private readonly intervalMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.announced = new PieceBitmap(partial.pieceCount);
  }

  /** Announces if pieces arrived since the last announce and the interval has passed; `force`: now, in any case. */
  tick(force = false): void {
    const { partial } = this;
    if (partial.state !== "open" || (!force && this.now() - this.lastMs < this.intervalMs)) return;
    let changed = false;
    const fresh: { index: number; sha256: Uint8Array }[] = [];
    for (let index = 0; index < partial.pieceCount; index++) {
      if (this.announced.has(index) || !partial.hasPiece(index)) continue;
      changed = true;
      this.announced.set(index);
      // A piece resumed from disk has no recorded hash until commit: it is announced held, without one.
      const sha256 = partial.pieceHash(index);
      if (sha256 !== undefined) fresh.push({ index, sha256 });
    }
    if (!changed && !force) return;
    this.lastMs = this.now();
    const { digest, size, pieceSize } = partial;
    // Only what peers can have now: the blob's last piece waits for the digest (see servableBitmap), and a
    // peer asking for it as held would be told it is missing.
    this.tracker.announce({ digest, size, pieceSize, complete: false, bitmap: servableBitmap(partial), pieceHashes: fresh });
  }
}
