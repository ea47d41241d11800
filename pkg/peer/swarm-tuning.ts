import type { PickerTuning } from "./piece-picker.js";
import type { ReceiveTuning } from "./receive-budget.js";
import type { RefreshTuning } from "./refresh-schedule.js";

/**
 * The knobs of a swarm download: the piece picker's, the refresh schedule's, the agent's receive budget's
 * and the download loop's own.
 */
export interface SwarmTuning extends PickerTuning, RefreshTuning, ReceiveTuning {
  /** Lookups to refresh holders, bitmaps and hashes (without notices from the tracker; refresh-schedule.ts). */
  readonly refreshIntervalMs: number;
  /** While pieces wait for their hashes: the quicker lookup interval. */
  readonly parkedRefreshIntervalMs: number;
  /** Progress announces (bitmap and verified hashes). */
  readonly announceIntervalMs: number;
  /**
   * No verified piece and no byte from any peer for this long (and no relay peer gaining pieces): the
   * download is stalled, and the fetcher asks for the origin grant. Slow progress is not a stall: a busy
   * machine delivers bytes late, a gone peer delivers none.
   */
  readonly stallMs: number;
  /**
   * No agent holds the origin grant and no peer holds a piece this agent misses, for this long: nobody
   * can bring the rest (the grantee died or left), and the download ends at once instead of after stallMs,
   * so that an agent takes the grant over. Short: a tracker's new grant or a peer's pieces reset it.
   */
  readonly orphanedMs: number;
  /** Another agent holds the origin grant and has announced nothing: how long to wait for it (GRANTEE_ANNOUNCE_WAIT_MS). */
  readonly granteeWaitMs: number;
}

/**
 * How long to wait for another agent's origin fetch to announce the blob before fetching it ourselves,
 * without the grant. Longer than the tracker's default --grant-stall-timeout (10 s): a grantee that stays
 * silent loses its grant to one of the waiting agents (their lookups ask for it) before they all fetch the
 * blob at once, and the others then wait for the new grantee (a moved grant restarts the wait, up to
 * MAX_GRANT_MOVES_WAITED times). Seen in `npm run bench`: a grantee whose origin connection crawled announced
 * nothing of a layer for 10 s, and all seven other agents sent their runtimes to the origin for it (2.76 × F).
 * At 3 s, seven agents of `npm run bench` at load ~20 fetched a 64 MiB layer from the origin beside its
 * healthy but busy grantee (1.75 × F more). The mirror counts this wait as progress toward a response
 * (BlobRequest.onSourceProgress), within its own bound. A grantee that is gone loses its grant with its
 * session, and the next lookup gets it.
 */
export const GRANTEE_ANNOUNCE_WAIT_MS = 12_000;
/** How often a moved grant restarts the wait for a grantee's first announce (each move is a new fetch). */
export const MAX_GRANT_MOVES_WAITED = 3;
/** The agent's defaults (most measured with the simulator, npm run sim). */
export const DEFAULT_SWARM_TUNING: SwarmTuning = {
  maxInflightPerPeer: 4,
  piecesPerRequest: 2,
  inOrderWindow: 4,
  relayAhead: 2,
  // Short waits measured best in the simulator (npm run sim; N = 32–316, 256 MiB): a relay that does not
  // arrive within half a second is asked again elsewhere rather than holding a slot for seconds. Last node
  // 2.1–2.6× the bound with 500 ms for both, against 2.2–5.7× with 3 s.
  relayWaitMs: 500,
  refreshIntervalMs: 500,
  parkedRefreshIntervalMs: 50,
  announceIntervalMs: 100,
  // With notices from the tracker (npm run sim, docs/scale.md): a lookup when a notice comes, at most one per
  // minLookupGapMs, and a slow fallback poll that keeps the tracker's watch (5 s) alive.
  noticeRefreshIntervalMs: 2_000,
  noticeParkedRefreshIntervalMs: 500,
  minLookupGapMs: 100,
  noticeHungryRequests: 4,
  stallMs: 3_000,
  orphanedMs: 500,
  granteeWaitMs: GRANTEE_ANNOUNCE_WAIT_MS,
  // A call silent this long (and its peer sending nothing else) is duplicated. 500 ms made agents on a
  // busy machine receive 9-19 % of an image twice in `npm run bench` (8 nodes, 2 cores): a loaded event
  // loop is often that silent. 1.5 s: 0-2.7 %, the last node as fast or faster (32.6-33.1 s against
  // 35.2-37.5 s), and the simulator as good or better (N = 32-316: 2.02-2.97x the bound, 2.23-2.99x).
  hedgeAfterMs: 1_500,
  endgamePieces: 4,
  endgameSilenceMs: 500,
  siblingWaitMs: 1_500,
  // The agent asks for what it receives in receiveWaitMs at its current rate (ReceiveBudget; measured in
  // docs/benchmarks.md): on a busy machine requests no longer wait seconds in peers' send queues.
  receiveWaitMs: 2_000,
  minReceiveBytes: 8 * 1024 * 1024,
  maxReceiveBytes: 128 * 1024 * 1024,
};
