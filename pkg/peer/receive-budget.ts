import type { AgentMetrics } from "../metrics/index.js";

/** The knobs of an agent's ReceiveBudget (part of SwarmTuning). */
export interface ReceiveTuning {
  /**
   * How long the pieces this agent has asked for (all its downloads together) should take to arrive at the
   * rate it is receiving now: the budget is that rate times this wait.
   */
  readonly receiveWaitMs: number;
  /** The budget never shrinks below this many bytes (a download just starting, or bytes not yet flowing). */
  readonly minReceiveBytes: number;
  /** Nor grows past this many. */
  readonly maxReceiveBytes: number;
}

/** The receive rate is measured over this long, in RATE_BUCKETS steps. */
export const RATE_WINDOW_MS = 2_000;
const RATE_BUCKETS = 8;
/** Every download may keep this many pieces asked for, whatever the budget: none is starved by the others. */
export const MIN_PIECES_PER_DOWNLOAD = 2;

/**
 * One download's part of the budget, counted in its own pieces: what it has asked for and whether it
 * wanted more than it got. It is the RequestBook's counter (take and give pieces) and the download's
 * source of room.
 */
export class BudgetShare {
  /** Piece bytes this download has asked for and not received yet. */
  bytes = 0;
  /** Its last plan used all the room it was given: it would take more. */
  hungry = false;

  constructor(
    private readonly budget: ReceiveBudget,
    /** The download's piece size. */
    readonly pieceBytes: number,
    /** Called when room it was refused frees up. */
    readonly wake: () => void,
  ) {}

  /** How many more pieces the download may ask for now (ReceiveBudget.room). */
  room(nowMs: number): number {
    return this.budget.room(this, nowMs);
  }

  /** The download asked for `pieces` more. */
  take(pieces: number): void {
    this.budget.count(this, pieces * this.pieceBytes);
  }

  /** `pieces` it had asked for arrived or are no longer wanted: room for the downloads that wanted more. */
  give(pieces: number): void {
    this.budget.count(this, -pieces * this.pieceBytes);
  }

  /** The download ended: whatever it still counted is given back. */
  leave(): void {
    this.budget.leave(this);
  }
}

/**
 * How many piece bytes an agent asks its peers for at once, across all its downloads: the rate it is
 * receiving now times receiveWaitMs, within [minReceiveBytes, maxReceiveBytes].
 *
 * Why a node-wide limit that follows the rate: every byte asked for and not yet received waits in some
 * peer's send queue. A fixed depth per peer and download (maxInflightPerPeer) is right for one link speed
 * only: on a busy machine that receives 4 MB/s, four layer downloads asking seven peers for four pieces
 * each queue tens of MiB, so a request waits seconds for its first byte, hedges fire at calls that are
 * only queued, and the mirror gives up on a layer that is merely behind. On an idle machine the same
 * rule keeps the budget large: the more it receives, the more it may ask for. While requests are limited
 * by the budget they arrive at the rate the budget allows, so it grows by receiveWaitMs / latency every
 * window until the links, not the budget, are the limit.
 *
 * The budget is shared fairly: a download that wants more gets an equal part of what the satisfied
 * downloads leave, and at least MIN_PIECES_PER_DOWNLOAD pieces. Small blobs (one small read) are not
 * counted (see upload-slots.ts: they go ahead of layer pieces everywhere).
 */
export class ReceiveBudget {
  private readonly shares = new Set<BudgetShare>();
  private readonly buckets = new Float64Array(RATE_BUCKETS);
  /** The bucket `buckets[0]` stands for, as a count of bucket lengths since time 0. */
  private bucketEpoch = 0;
  private total = 0;

  constructor(
    private readonly tuning: ReceiveTuning,
    private readonly metrics?: AgentMetrics,
  ) {}

  /** A download of pieces of `pieceBytes` starts asking for them; `wake` is called when room it wanted frees up. */
  join(pieceBytes: number, wake: () => void): BudgetShare {
    const share = new BudgetShare(this, pieceBytes, wake);
    this.shares.add(share);
    return share;
  }

  /** @internal BudgetShare.leave. */
  leave(share: BudgetShare): void {
    this.count(share, -share.bytes);
    this.shares.delete(share);
  }

  /** Piece bytes arrived (from any peer, for any download): the rate the budget follows. */
  received(bytes: number, nowMs: number): void {
    this.advance(nowMs);
    const last = RATE_BUCKETS - 1;
    this.buckets[last] = (this.buckets[last] ?? 0) + bytes;
  }

  /** Bytes per second received over the last RATE_WINDOW_MS. */
  rate(nowMs: number): number {
    this.advance(nowMs);
    let sum = 0;
    for (const bytes of this.buckets) sum += bytes;
    return (sum * 1000) / RATE_WINDOW_MS;
  }

  /** The bytes all downloads together may have asked for now. */
  limit(nowMs: number): number {
    const { receiveWaitMs, minReceiveBytes, maxReceiveBytes } = this.tuning;
    return Math.min(maxReceiveBytes, Math.max(minReceiveBytes, (this.rate(nowMs) * receiveWaitMs) / 1000));
  }

  /** Piece bytes asked for and not received yet, all downloads together. */
  get requested(): number {
    return this.total;
  }

  /**
   * How many more of its pieces the download may ask for now: its fair part of the budget (an equal part,
   * with the other downloads that want more, of what the satisfied ones leave; at least
   * MIN_PIECES_PER_DOWNLOAD pieces), and no more than the budget has left unless that minimum needs it.
   */
  room(share: BudgetShare, nowMs: number): number {
    const { pieceBytes } = share;
    const limit = this.limit(nowMs);
    this.metrics?.receiveBudgetBytes.set(limit);
    let reserved = 0;
    let hungry = 1;
    for (const other of this.shares) {
      if (other === share) continue;
      if (other.hungry) hungry++;
      else reserved += other.bytes;
    }
    const minimum = MIN_PIECES_PER_DOWNLOAD * pieceBytes;
    const fair = Math.max(minimum, Math.ceil((limit - reserved) / hungry));
    const left = Math.max(limit - this.total, minimum - share.bytes);
    const bytes = Math.min(fair - share.bytes, left);
    return Math.max(0, Math.floor(bytes / pieceBytes));
  }

  /**
   * @internal The download asked for `bytes` more (negative: they arrived or are no longer wanted, which
   * wakes the downloads that wanted more).
   */
  count(share: BudgetShare, bytes: number): void {
    if (bytes === 0) return;
    share.bytes += bytes;
    this.total += bytes;
    this.metrics?.requestedPieceBytes.set(this.total);
    if (bytes < 0) for (const other of this.shares) if (other !== share && other.hungry) other.wake();
  }

  private advance(nowMs: number): void {
    const bucketMs = RATE_WINDOW_MS / RATE_BUCKETS;
    const epoch = Math.floor(nowMs / bucketMs) - (RATE_BUCKETS - 1);
    const shift = epoch - this.bucketEpoch;
    if (shift <= 0) return;
    if (shift >= RATE_BUCKETS) this.buckets.fill(0);
    else {
      this.buckets.copyWithin(0, shift);
      this.buckets.fill(0, RATE_BUCKETS - shift);
    }
    this.bucketEpoch = epoch;
  }
}
