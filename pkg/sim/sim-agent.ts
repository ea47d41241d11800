import {
  MAX_PARKED_PIECES,
  type PickerState,
  PiecePicker,
  type PieceRequest,
  type RefreshState,
  RequestBook,
  SwarmPeers,
  loopSleepMs,
  refreshDue,
} from "../peer/index.js";
import type { BlobChange, LookupResult } from "../tracker/index.js";
import { GRANTEE_ANNOUNCE_WAIT_MS, GRANTEE_NOTICE_POLL_MS, GRANTEE_POLL_MS } from "./config.js";
import { SimSession } from "./sim-session.js";
import type { AgentCounters, World } from "./sim-world.js";

/** Simulated calls are never cancelled through a signal; every request shares this one controller. */
const UNUSED_CONTROLLER = new AbortController();

type Phase = "idle" | "polling" | "origin" | "swarm" | "done";

/**
 * One node's agent pulling the blob, with the agent's own decisions where it makes them: the tracker
 * lookup with the grant (SwarmFetcher), the swarm download loop (SwarmDownload: refresh, plan with the
 * real PiecePicker, announce, stall), relays, parked pieces awaiting their hash, and the origin fetch
 * when granted; its tracker session and announces are its SimSession. Transfers are the simulation's
 * calls; time is the simulation's clock.
 */
export class SimAgent {
  readonly agentId: string;
  readonly held: Uint8Array;
  heldCount = 0;
  completedAtMs: number | undefined;
  readonly counters: AgentCounters = {
    lookups: 0,
    announces: 0,
    bytesFromPeers: 0,
    bytesFromOrigin: 0,
    wastedBytes: 0,
    stalls: 0,
    notices: 0,
    deltaNotices: 0,
  };
  /** Upload streams this node serves now. */
  uploads = 0;
  /** The tick the world will next wake it at; the world's queue compares against this. */
  wakeTick = Number.POSITIVE_INFINITY;
  private phase: Phase = "idle";
  private readonly session: SimSession;
  private readonly known: Uint8Array;
  private pollUntilMs = 0;
  // One download round (SwarmDownload); replaced after a stall.
  private peers: SwarmPeers;
  private book = new RequestBook(() => UNUSED_CONTROLLER);
  private picker: PiecePicker;
  private readonly parked = new Set<number>();
  private granteeAgentId: string | undefined;
  private lastRefreshMs = Number.NEGATIVE_INFINITY;
  private needRefresh = false;
  /** A notice that says "look it up" came since the last lookup (SwarmDownload's `noticed`). */
  private noticed = false;
  /** A notice carried the change (SwarmDownload's `deltas`). */
  private deltas = false;
  private answeredHolders = 0;
  private lastProgressMs = 0;
  private changed = true;
  private lastPlanMs = Number.NEGATIVE_INFINITY;

  constructor(
    readonly index: number,
    readonly zone: string,
    private readonly world: World<SimAgent>,
    private readonly random: () => number,
  ) {
    this.agentId = `agent-${index}`;
    const count = world.pieceCount;
    this.held = new Uint8Array(count);
    this.known = new Uint8Array(count);
    this.session = new SimSession(world, { agentId: this.agentId, index, zone }, (change) => {
      world.notice(this, change);
    });
    this.peers = new SwarmPeers(count, zone);
    this.picker = this.newPicker();
  }

  get complete(): boolean {
    return this.phase === "done";
  }

  /** Whether this node can serve piece `index` now: held, and the last piece only once the blob is whole. */
  serves(index: number): boolean {
    return this.held[index] === 1 && (index !== this.world.pieceCount - 1 || this.heldCount === this.world.pieceCount);
  }

  /** Registers with the tracker (the agent's session; its store holds nothing of the blob). */
  register(): void {
    this.session.register();
  }

  /**
   * A BlobChanged notice arrived: a waiting fetcher asks again; a download applies its change
   * (SwarmDownload.applyChange), or looks up (after its minimum gap) when it carried none.
   */
  notice(nowMs: number, change: BlobChange | undefined): void {
    this.counters.notices++;
    if (this.phase !== "polling" && this.phase !== "swarm") return;
    if (this.phase === "swarm" && change !== undefined && change.size === this.world.config.blobBytes) {
      this.counters.deltaNotices++;
      for (let i = 0; i < change.hashes.indices.length; i++) this.known[change.hashes.indices[i] ?? 0] = 1;
      this.peers.merge(
        change.holders.filter((h) => h.agentId !== this.agentId),
        nowMs,
        this.random,
      );
      this.granteeAgentId = change.granteeAgentId;
      this.deltas = true;
      this.changed = true;
      this.unpark(nowMs);
    } else this.noticed = true;
    this.world.wake(this, nowMs);
  }

  heartbeat(): void {
    this.session.heartbeat(this.uploads);
  }

  /** The pull starts: a lookup that asks for the origin grant. */
  start(nowMs: number): void {
    this.phase = "polling";
    this.pollUntilMs = nowMs + GRANTEE_ANNOUNCE_WAIT_MS;
    this.step(nowMs);
  }

  /** One turn of whatever the agent is doing; the world calls it when woken. */
  step(nowMs: number): void {
    if (this.phase === "polling") this.poll(nowMs);
    else if (this.phase === "swarm") this.swarmStep(nowMs);
  }

  /** A piece arrived on a call from a peer (`request`) or from the origin (undefined). */
  receive(index: number, request: PieceRequest | undefined, nowMs: number): void {
    const bytes = this.pieceBytes(index);
    if (request === undefined) {
      this.counters.bytesFromOrigin += bytes;
      if (this.held[index] === 0) {
        // The grantee computes the hash from the origin's bytes and publishes it.
        this.known[index] = 1;
        this.hold(index, nowMs);
      }
      this.announce(nowMs, false);
      if (this.heldCount === this.world.pieceCount) this.finish(nowMs);
      return;
    }
    this.book.settle(request, index);
    this.changed = true;
    if (this.phase !== "swarm" || this.held[index] === 1) {
      this.counters.wastedBytes += bytes;
      return;
    }
    if (this.known[index] === 0) {
      if (this.parked.has(index) || this.parked.size >= MAX_PARKED_PIECES) this.counters.wastedBytes += bytes;
      else this.parked.add(index);
      this.needRefresh = true;
      this.world.wake(this, nowMs);
      return;
    }
    this.counters.bytesFromPeers += bytes;
    this.hold(index, nowMs);
    this.lastProgressMs = nowMs;
    this.announce(nowMs, false);
    if (this.heldCount === this.world.pieceCount) this.finish(nowMs);
  }

  /** Bytes arrived on `request`'s call this step. */
  data(request: PieceRequest, bytes: number, nowMs: number): void {
    request.lastDataMs = nowMs;
    request.receivedBytes += bytes;
    this.lastProgressMs = nowMs;
  }

  /** A call ended: delivered everything, or failed (`missing`: the peer lacked a piece within its wait). */
  callEnded(request: PieceRequest, missing: boolean, nowMs: number): void {
    if (!this.book.has(request)) return;
    this.book.finish(request);
    if (missing) this.needRefresh = true;
    this.changed = true;
    this.world.wake(this, nowMs);
  }

  private poll(nowMs: number): void {
    const lookup = this.lookup(true, []);
    if (lookup.origin.granted || (lookup.size === 0 && nowMs >= this.pollUntilMs)) {
      this.fromOrigin();
      return;
    }
    if (lookup.size === 0) {
      // With notices the grantee's first announce wakes it (notice()); the poll is the fallback.
      const pollMs = this.world.config.notices ? GRANTEE_NOTICE_POLL_MS : GRANTEE_POLL_MS;
      this.world.wake(this, Math.min(nowMs + pollMs, this.pollUntilMs));
      return;
    }
    this.phase = "swarm";
    this.newRound(lookup, nowMs);
    this.announce(nowMs, true);
    this.swarmStep(nowMs);
  }

  private fromOrigin(): void {
    this.phase = "origin";
    this.world.abortCalls(this);
    this.world.openOrigin(this);
  }

  private newRound(first: LookupResult, nowMs: number): void {
    this.peers = new SwarmPeers(this.world.pieceCount, this.zone);
    this.book = new RequestBook(() => UNUSED_CONTROLLER);
    // The picker carries over from the round before, as in SwarmFetcher (SwarmDownloadContext.picker).
    this.parked.clear();
    this.lastProgressMs = nowMs;
    this.lastRefreshMs = nowMs;
    this.noticed = false;
    this.apply(first, nowMs);
  }

  /** One pass of the download loop (SwarmDownload.run). */
  private swarmStep(nowMs: number): void {
    const { tuning, idlePlanMs } = this.world.config;
    // The pace of this pass is set by what was parked when it began (SwarmDownload.run).
    const parked = this.parked.size > 0;
    if (refreshDue(tuning, this.refreshState(nowMs, parked))) this.refresh(nowMs);
    if (this.phase !== "swarm") return;
    if (this.changed || nowMs - this.lastPlanMs >= idlePlanMs) {
      this.changed = false;
      this.lastPlanMs = nowMs;
      for (const planned of this.picker.plan(this.state(nowMs))) {
        const request = this.book.add(planned.peer, planned.pieces, planned.waitMs > 0, nowMs);
        if (!this.world.openCall(this, planned.peer, request, planned.waitMs)) {
          this.book.finish(request);
          this.peers.busy(planned.peer, nowMs);
          this.changed = true;
        }
      }
    }
    this.announce(nowMs, false);
    if (nowMs - this.lastProgressMs >= tuning.stallMs && !this.book.moving(nowMs, tuning.stallMs)) {
      this.stalled(nowMs);
      return;
    }
    this.world.wake(this, nowMs + loopSleepMs(tuning, this.refreshState(nowMs, parked)));
  }

  private refreshState(nowMs: number, parked: boolean): RefreshState {
    return {
      nowMs,
      lastRefreshMs: this.lastRefreshMs,
      needRefresh: this.needRefresh,
      noticed: this.noticed,
      parked,
      inflight: this.book.size,
      crowded: this.answeredHolders >= this.world.config.maxLookupHolders,
      notices: this.world.config.notices,
      deltas: this.deltas,
    };
  }

  /** No progress for stallMs (SwarmFetcher's answer to a stalled round). */
  private stalled(nowMs: number): void {
    this.counters.stalls++;
    const suppliers = this.picker.suppliers(this.state(nowMs));
    const grantee = this.granteeAgentId;
    const granteeProgressing =
      grantee !== undefined &&
      [...this.peers.usable(nowMs), ...this.peers.busyNow(nowMs, this.world.config.tuning.siblingWaitMs)].some(
        (p) => p.agentId === grantee && nowMs - p.grewAtMs < this.world.config.tuning.stallMs,
      );
    this.world.abortCalls(this);
    if (granteeProgressing) {
      const next = this.lookup(false, []);
      if (next.size > 0) {
        this.newRound(next, nowMs);
        this.world.wake(this, nowMs);
        return;
      }
    }
    const again = this.lookup(true, []);
    if (again.origin.granted || (suppliers === 0 && again.origin.granteeAgentId === undefined)) {
      this.fromOrigin();
      return;
    }
    this.newRound(again, nowMs);
    this.world.wake(this, nowMs);
  }

  private refresh(nowMs: number): void {
    this.lastRefreshMs = nowMs;
    this.needRefresh = false;
    this.noticed = false;
    this.apply(this.lookup(false, []), nowMs);
    this.unpark(nowMs);
  }

  /** Parked pieces whose hash is known now are kept. */
  private unpark(nowMs: number): void {
    for (const index of [...this.parked]) {
      if (this.known[index] === 0) continue;
      this.parked.delete(index);
      if (this.held[index] === 1) continue;
      this.counters.bytesFromPeers += this.pieceBytes(index);
      this.hold(index, nowMs);
      this.lastProgressMs = nowMs;
    }
    if (this.heldCount === this.world.pieceCount) this.finish(nowMs);
  }

  private apply(result: LookupResult, nowMs: number): void {
    result.pieceHashes.forEach((hash, i) => {
      if (hash !== undefined) this.known[i] = 1;
    });
    this.peers.update(result.holders, nowMs);
    this.granteeAgentId = result.origin.granteeAgentId;
    this.answeredHolders = result.holders.length;
    this.changed = true;
  }

  private lookup(wantOriginGrant: boolean, excluded: readonly string[]): LookupResult {
    this.counters.lookups++;
    return this.world.tracker.lookup(this.agentId, this.world.digest, wantOriginGrant, {}, excluded);
  }

  private state(nowMs: number): PickerState {
    return {
      nowMs,
      held: (i) => this.held[i] === 1,
      parked: (i) => this.parked.has(i),
      parkedCount: this.parked.size,
      peers: this.peers.usable(nowMs),
      busy: this.peers.busyNow(nowMs, this.world.config.tuning.siblingWaitMs),
      granteeAgentId: this.granteeAgentId,
      requestsFor: (i) => this.book.requestsFor(i),
    };
  }

  private hold(index: number, nowMs: number): void {
    this.held[index] = 1;
    this.heldCount++;
    this.session.hold(index);
    this.lastProgressMs = nowMs;
  }

  /** Progress announces (ProgressAnnouncer), until the blob is whole. */
  private announce(nowMs: number, force: boolean): void {
    if (this.phase !== "done" && this.session.announce(this.held, nowMs, force)) this.counters.announces++;
  }

  /** The blob is whole: calls stop, the inventory announces it complete with every hash (InventorySync). */
  private finish(nowMs: number): void {
    if (this.phase === "done") return;
    this.phase = "done";
    this.completedAtMs = nowMs;
    this.world.abortCalls(this);
    this.parked.clear();
    this.counters.announces++;
    this.session.complete();
    this.world.completed(this);
  }

  private pieceBytes(index: number): number {
    const { blobBytes, pieceBytes } = this.world.config;
    return Math.min(pieceBytes, blobBytes - index * pieceBytes);
  }

  private newPicker(): PiecePicker {
    return new PiecePicker({
      pieceCount: this.world.pieceCount,
      selfAgentId: this.agentId,
      zone: this.zone,
      tuning: this.world.config.tuning,
      random: this.random,
    });
  }
}
