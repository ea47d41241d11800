import type { Digest } from "../oci/index.js";
import {
  MAX_PARKED_PIECES,
  type PickerState,
  PiecePicker,
  type PieceRequest,
  type RefreshState,
  RequestBook,
  type SwarmPeer,
  loopSleepMs,
  refreshDue,
} from "../peer/index.js";
import { PieceBitmap } from "../piece/index.js";
import type { BlobChange, LookupResult, MemoryTracker, TrackerSession } from "../tracker/index.js";
import { GRANTEE_ANNOUNCE_WAIT_MS, GRANTEE_NOTICE_POLL_MS, GRANTEE_POLL_MS, type SimConfig } from "./config.js";
import { SimPeers } from "./sim-peers.js";

/** Simulated calls are never cancelled through a signal; every request shares this one controller. */
const UNUSED_CONTROLLER = new AbortController();

/** What an agent sees of the simulated world. */
export interface World {
  readonly config: SimConfig;
  readonly tracker: MemoryTracker;
  readonly digest: Digest;
  readonly pieceCount: number;
  /** The SHA-256 of each piece as the grantee computes it (stand-ins: one array per piece). */
  readonly hashes: readonly Uint8Array[];
  /** Opens a ReadPieces call to `peer`; false when it refused (all upload slots busy). */
  openCall(agent: SimAgent, peer: SwarmPeer, request: PieceRequest, waitMs: number): boolean;
  /** Fetches the pieces `agent` lacks from the origin, in order. */
  openOrigin(agent: SimAgent): void;
  /** Cancels `agent`'s calls (its download round ended); their bytes in flight are wasted. */
  abortCalls(agent: SimAgent): void;
  /** Runs `agent.step` at `atMs` (or earlier if already due). */
  wake(agent: SimAgent, atMs: number): void;
  /** An agent finished: the simulation counts it. */
  completed(agent: SimAgent): void;
  /** The tracker sent `agent` a BlobChanged notice (with its change, if any): it arrives a little later (agent.notice). */
  notice(agent: SimAgent, change: BlobChange | undefined): void;
}

export interface AgentCounters {
  lookups: number;
  announces: number;
  bytesFromPeers: number;
  bytesFromOrigin: number;
  /** Pieces received twice, or dropped for want of a hash, or cut off by a cancelled call. */
  wastedBytes: number;
  stalls: number;
  /** BlobChanged notices received. */
  notices: number;
  /** Of them, notices whose change the download applied instead of looking the blob up. */
  deltaNotices: number;
}

type Phase = "idle" | "polling" | "origin" | "swarm" | "done";

/**
 * One node's agent pulling the blob, with the agent's own decisions where it makes them: the tracker
 * lookup with the grant (SwarmFetcher), the swarm download loop (SwarmDownload: refresh, plan with the
 * real PiecePicker, announce, stall), relays, parked pieces awaiting their hash, and the origin fetch
 * when granted. Transfers are the simulation's calls; time is the simulation's clock.
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
  private session: TrackerSession | undefined;
  private readonly known: Uint8Array;
  private readonly announced: PieceBitmap;
  private readonly bitmap: PieceBitmap;
  private lastAnnounceMs = Number.NEGATIVE_INFINITY;
  private pollUntilMs = 0;
  // One download round (SwarmDownload); replaced after a stall.
  private peers: SimPeers;
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
    private readonly world: World,
    private readonly random: () => number,
  ) {
    this.agentId = `agent-${index}`;
    const count = world.pieceCount;
    this.held = new Uint8Array(count);
    this.known = new Uint8Array(count);
    this.announced = new PieceBitmap(count);
    this.bitmap = new PieceBitmap(count);
    this.peers = new SimPeers(count, zone);
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
    const octet = (n: number): number => n & 0xff;
    this.session = this.world.tracker.register(
      {
        agentId: this.agentId,
        nodeName: `node-${this.index}`,
        zone: this.zone,
        peerAddress: `10.${octet(this.index >> 16)}.${octet(this.index >> 8)}.${octet(this.index)}:5052`,
      },
      this.world.config.notices
        ? {
            onNotice: (_digest, change) => {
              this.world.notice(this, change);
              return true;
            },
          }
        : {},
    );
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
    this.session?.heartbeat(this.uploads);
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
    this.peers = new SimPeers(this.world.pieceCount, this.zone);
    this.book = new RequestBook(() => UNUSED_CONTROLLER);
    this.picker = this.newPicker();
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
    if (nowMs - this.lastProgressMs >= tuning.stallMs && !this.productive(nowMs)) {
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

  private productive(nowMs: number): boolean {
    const { stallMs } = this.world.config.tuning;
    for (const request of this.book.requests()) {
      if (request.receivedBytes > 0 && nowMs - request.lastDataMs < stallMs) return true;
      if (request.relay ? nowMs - request.peer.grewAtMs < stallMs : nowMs - request.startedMs < stallMs) return true;
    }
    return false;
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
    this.bitmap.set(index);
    this.lastProgressMs = nowMs;
  }

  /** ProgressAnnouncer: bitmap and the hashes of pieces held since the last announce, at most every announceIntervalMs. */
  private announce(nowMs: number, force: boolean): void {
    const session = this.session;
    if (session === undefined || this.phase === "done") return;
    if (!force && nowMs - this.lastAnnounceMs < this.world.config.tuning.announceIntervalMs) return;
    const fresh: { index: number; sha256: Uint8Array }[] = [];
    for (let index = 0; index < this.world.pieceCount; index++) {
      if (this.held[index] === 0 || this.announced.has(index)) continue;
      this.announced.set(index);
      const sha256 = this.world.hashes[index];
      if (sha256 !== undefined) fresh.push({ index, sha256 });
    }
    if (fresh.length === 0 && !force) return;
    this.lastAnnounceMs = nowMs;
    this.counters.announces++;
    const { digest } = this.world;
    const { blobBytes: size, pieceBytes: pieceSize } = this.world.config;
    session.announce({ digest, size, pieceSize, complete: false, bitmap: this.bitmap.toBytes(), pieceHashes: fresh });
  }

  /** The blob is whole: calls stop, the inventory announces it complete with every hash (InventorySync). */
  private finish(nowMs: number): void {
    if (this.phase === "done") return;
    this.phase = "done";
    this.completedAtMs = nowMs;
    this.world.abortCalls(this);
    this.parked.clear();
    this.counters.announces++;
    const { digest, hashes } = this.world;
    const { blobBytes: size, pieceBytes: pieceSize } = this.world.config;
    this.session?.announce({ digest, size, pieceSize, complete: true, pieceHashes: hashes.map((sha256, index) => ({ index, sha256 })) });
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
