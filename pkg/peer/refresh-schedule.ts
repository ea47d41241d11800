/**
 * When a download asks the tracker again (SwarmDownload's loop, and the simulator's model of it). Without
 * notices it polls: every `refreshIntervalMs`, every `parkedRefreshIntervalMs` while pieces wait for their
 * hashes. With notices (the tracker tells it when the blob changes) a notice is the reason to look up, no
 * sooner than `minLookupGapMs` after the last lookup so a stream of notices is never a stream of lookups, and
 * the polls slow to a fallback that also keeps the tracker's watch alive. When the notices carry the change
 * (BlobChange: holders, new hashes, grantee) the download applies it and looks up only on the fallback poll,
 * on a notice that says "look it up", and never merely because a piece waits for its hash or a relay missed
 * (the notice that brings the hash or the bitmap is on its way; the parked poll is the fallback).
 */
export interface RefreshTuning {
  readonly refreshIntervalMs: number;
  readonly parkedRefreshIntervalMs: number;
  readonly announceIntervalMs: number;
  /** With notices: the fallback poll, and while pieces are parked. */
  readonly noticeRefreshIntervalMs: number;
  readonly noticeParkedRefreshIntervalMs: number;
  /** With notices: the least time between two lookups a notice causes. */
  readonly minLookupGapMs: number;
  /** With notices: a notice makes a download with fewer calls in flight than this look up (heeds()). */
  readonly noticeHungryRequests: number;
}

export interface RefreshState {
  readonly nowMs: number;
  readonly lastRefreshMs: number;
  /** Something the download saw itself calls for a lookup now (a relay missed its piece, a piece was parked). */
  readonly needRefresh: boolean;
  /** A notice came since the last lookup started. */
  readonly noticed: boolean;
  /** Pieces wait for their hashes. */
  readonly parked: boolean;
  /** Calls in flight (RequestBook.size): a download with few could use news now; a busy one can wait for its poll. */
  readonly inflight: number;
  /**
   * The last lookup answered with as many holders as an answer holds (the tracker sampled a crowd): the
   * next answer will list other holders.
   */
  readonly crowded: boolean;
  /** The tracker sends notices (Tracker.sendsNotices). */
  readonly notices: boolean;
  /** The tracker's notices carry the change (one did, in this download): no lookup just to learn what changed. */
  readonly deltas: boolean;
}

/**
 * How often the download polls the tracker when nothing else makes it look up: slowly while notices tell
 * it of every change; at the old pace without notices, and in a crowd, where it acts on few notices (heeds)
 * and the tracker spaces a popular blob's notices further apart (2 s at 1,000 watchers).
 */
export function pollIntervalMs(tuning: RefreshTuning, state: Pick<RefreshState, "parked" | "notices" | "crowded">): number {
  if (state.notices && !state.crowded) return state.parked ? tuning.noticeParkedRefreshIntervalMs : tuning.noticeRefreshIntervalMs;
  return state.parked ? tuning.parkedRefreshIntervalMs : tuning.refreshIntervalMs;
}

/** Whether to look the blob up now. */
export function refreshDue(tuning: RefreshTuning, state: RefreshState): boolean {
  const since = state.nowMs - state.lastRefreshMs;
  if (state.needRefresh && (!(state.deltas && state.notices) || (state.parked && since >= tuning.minLookupGapMs))) return true;
  if (heeds(tuning, state) && since >= tuning.minLookupGapMs) return true;
  return since >= pollIntervalMs(tuning, state);
}

/**
 * Whether a notice is acted on now. Always while every holder fits in an answer. In a crowd (more holders
 * than an answer lists, 50) every lookup answers with another sample of holders, and a new sample every
 * 100 ms upsets a busy download's plan (the simulator: 8 % slower at 316 nodes): there, only while pieces
 * wait for their hashes, or while the download has fewer calls in flight than `noticeHungryRequests` (it
 * may have nothing to ask for).
 */
function heeds(tuning: RefreshTuning, state: RefreshState): boolean {
  return state.noticed && (!state.crowded || state.parked || state.inflight < tuning.noticeHungryRequests);
}

/** How long the loop may sleep (it is woken early by pieces, calls ending and notices): the next announce, poll or noticed lookup. */
export function loopSleepMs(tuning: RefreshTuning, state: RefreshState): number {
  const ms = Math.min(pollIntervalMs(tuning, state), tuning.announceIntervalMs);
  if (!heeds(tuning, state)) return ms;
  return Math.min(ms, Math.max(0, tuning.minLookupGapMs - (state.nowMs - state.lastRefreshMs)));
}
