import { isBusy, markBusy, rankPeers, rendezvousSeed, type SwarmPeer } from "../peer/index.js";
import { PieceBitmap } from "../piece/index.js";
import type { HolderInfo } from "../tracker/index.js";

/**
 * One simulated agent's view of the peers of the blob, refreshed from tracker lookups, in the shape the
 * PiecePicker reads (SwarmPeer). It follows the agent's rules: a peer the tracker stops listing is
 * dropped unless a request to it runs; a peer counts as growing when it is seen with more pieces; a busy
 * peer is left alone for BUSY_BACKOFF_MS. Peer failures are not simulated, so there is no failure back-off.
 */
export class SimPeers {
  private readonly peers = new Map<string, SwarmPeer & { bytes: Uint8Array | undefined }>();
  private ordered: SwarmPeer[] = [];
  /** Active uploads as the tracker last told them (SwarmPeers' load). */
  private readonly load = new Map<string, number>();
  private dirty = true;

  constructor(
    private readonly pieceCount: number,
    private readonly zone: string,
  ) {}

  update(holders: readonly HolderInfo[], nowMs: number): void {
    const seen = new Set<string>();
    holders.forEach((holder, rank) => {
      seen.add(holder.agentId);
      this.upsert(holder, rank, nowMs);
    });
    for (const [id, peer] of this.peers) if (!seen.has(id) && peer.inflight === 0) this.peers.delete(id);
    this.dirty = true;
  }

  /** A notice's changed holders (SwarmPeers.merge): updated or added, none dropped, all ranked again (rankPeers). */
  merge(holders: readonly HolderInfo[], nowMs: number, random: () => number): void {
    for (const holder of holders) this.upsert(holder, 0, nowMs);
    rankPeers(this.peers.values(), this.zone, this.pieceCount, (id) => this.load.get(id) ?? 0, random);
    this.dirty = true;
  }

  private upsert(holder: HolderInfo, rank: number, nowMs: number): void {
    this.load.set(holder.agentId, holder.activeUploads);
    const local = this.zone === "" || holder.zone === this.zone;
    const known = this.peers.get(holder.agentId);
    if (known === undefined) {
      const bitmap = holder.complete ? undefined : new PieceBitmap(this.pieceCount, holder.bitmap);
      this.peers.set(holder.agentId, {
        agentId: holder.agentId,
        seed: rendezvousSeed(holder.agentId),
        address: holder.peerAddress,
        zone: holder.zone,
        local,
        rank,
        complete: holder.complete,
        bitmap,
        bytes: holder.complete ? undefined : holder.bitmap,
        grewAtMs: nowMs,
        dataAtMs: Number.NEGATIVE_INFINITY,
        inflight: 0,
        failures: 0,
        excludedUntilMs: 0,
        busyUntilMs: Number.NEGATIVE_INFINITY,
        busySinceMs: Number.NEGATIVE_INFINITY,
        badPieces: false,
      });
      return;
    }
    known.rank = rank;
    known.local = local;
    // The tracker hands out the bytes it stored; the same array means the same announcement.
    if (holder.complete ? !known.complete : holder.bitmap !== known.bytes) {
      const bitmap = holder.complete ? undefined : new PieceBitmap(this.pieceCount, holder.bitmap);
      if ((bitmap?.count ?? 0) > (known.bitmap?.count ?? 0) || (holder.complete && !known.complete)) known.grewAtMs = nowMs;
      known.complete = holder.complete;
      known.bitmap = bitmap;
      known.bytes = holder.complete ? undefined : holder.bitmap;
    }
  }

  /** Usable peers now, best ranked first. */
  usable(nowMs: number): SwarmPeer[] {
    if (this.dirty) {
      this.ordered = [...this.peers.values()].sort((a, b) => a.rank - b.rank);
      this.dirty = false;
    }
    return this.ordered.filter((p) => p.excludedUntilMs <= nowMs && p.busyUntilMs <= nowMs);
  }

  /** Peers left alone now only because they refused a call, while worth waiting for (SwarmPeers.busyNow). */
  busyNow(nowMs: number, patienceMs: number): SwarmPeer[] {
    this.usable(nowMs);
    return this.ordered.filter((p) => p.excludedUntilMs <= nowMs && isBusy(p, nowMs, patienceMs));
  }

  busy(peer: SwarmPeer, nowMs: number): void {
    markBusy(peer, nowMs);
  }
}
