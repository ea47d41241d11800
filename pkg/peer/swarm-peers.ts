import { PieceBitmap } from "../piece/index.js";
import { type HolderInfo, rankKey } from "../tracker/index.js";
import { rendezvousSeed } from "./cross-zone-share.js";

/** After a refused or failed request, how long a peer is left alone (for this blob). */
export const BUSY_BACKOFF_MS = 250;
export const FAILURE_BACKOFF_MS = 5_000;
/** Failures after which a peer is given up for this blob. */
export const MAX_PEER_FAILURES = 3;

/** What the scheduler knows of one peer, for one blob. */
export interface SwarmPeer {
  readonly agentId: string;
  /** Rendezvous seed of the agent id (CrossZoneShare). */
  readonly seed: number;
  address: string;
  /** topology.kubernetes.io/zone as the tracker knows it; "" when unknown. */
  zone: string;
  /** In this agent's zone, or zones are not in play (this agent's zone is unknown): preferred as a source. */
  local: boolean;
  /** Position in the tracker's ranking (same node, same zone, least loaded first). */
  rank: number;
  complete: boolean;
  /** Pieces held; undefined when complete. */
  bitmap: PieceBitmap | undefined;
  /** First seen, or last seen holding more pieces than before (ms, performance.now): is it still downloading? */
  grewAtMs: number;
  /**
   * When any call to this peer last received bytes (ms, performance.now; -Infinity before the first):
   * a call queued behind the same peer's other calls is waiting, not stalled, while the peer sends.
   */
  dataAtMs: number;
  /** Pieces requested from this peer and not yet received. */
  inflight: number;
  failures: number;
  /** No requests before this time (ms, performance.now); Infinity once it sent a bad piece. */
  excludedUntilMs: number;
  /**
   * Refused a call for lack of upload slots (ERR_PEER_BUSY): no requests before this time (ms,
   * performance.now), but it still holds what it holds. Unlike a failure, this is the peer's backpressure.
   */
  busyUntilMs: number;
  /** When its current run of refusals began (ms): a refusal more than BUSY_BACKOFF_MS after the last backoff ended starts one. */
  busySinceMs: number;
  /** Sent a piece that failed verification: dropped for this blob, and named to the tracker as such. */
  badPieces: boolean;
}

/** Records a refusal (ERR_PEER_BUSY): the peer is left alone for BUSY_BACKOFF_MS; its run of refusals goes on or begins. */
export function markBusy(peer: SwarmPeer, nowMs: number): void {
  if (nowMs > peer.busyUntilMs + BUSY_BACKOFF_MS) peer.busySinceMs = nowMs;
  peer.busyUntilMs = nowMs + BUSY_BACKOFF_MS;
}

/**
 * Backed off after a refusal and still worth waiting for: refusing for less than `patienceMs`, or it sent
 * this agent bytes within that time. A peer that only refuses for longer is full for good, as far as
 * this download can tell, and its pieces may come from elsewhere.
 */
export function isBusy(peer: SwarmPeer, nowMs: number, patienceMs: number): boolean {
  return peer.busyUntilMs > nowMs && (nowMs - peer.busySinceMs < patienceMs || nowMs - peer.dataAtMs < patienceMs);
}

/** Stands for this agent in rankKey: a node name no holder has (same-node holders are not told apart here). */
const SELF_NODE = "\0self";

/**
 * Ranks `peers` (sets their `rank`) as the tracker ranks holders for this agent (holder-ranking.ts): same
 * zone, complete before partial, fewest active uploads (`load`, as last told), most pieces, ties at random.
 * After a notice's merge this stands in for the fresh ranking a lookup would have brought, so the load the
 * tracker reports keeps steering the download (the simulator could not tell it from keeping the first
 * ranking: 1.37 against 1.38 times the bound at 8 nodes, 8 seeds; docs/architecture.md).
 */
export function rankPeers(
  peers: Iterable<SwarmPeer>,
  zone: string,
  pieceCount: number,
  load: (agentId: string) => number,
  random: () => number,
): void {
  const self = { agentId: "", nodeName: SELF_NODE, zone, peerAddress: "" };
  const keyed = [...peers].map((peer) => ({
    peer,
    key:
      rankKey(
        self,
        { agentId: peer.agentId, nodeName: "", zone: peer.zone, peerAddress: peer.address },
        peer.complete,
        load(peer.agentId),
        peer.complete ? pieceCount : (peer.bitmap?.count ?? 0),
      ) + random(),
  }));
  keyed.sort((a, b) => a.key - b.key);
  keyed.forEach(({ peer }, rank) => {
    peer.rank = rank;
  });
}

/** What a fetch learned about an agent, kept across download rounds and while it is out of the tracker's list. */
interface Verdict {
  failures: number;
  bad: boolean;
  /** A piece of it was kept: if the blob then fails its digest, this agent is a suspect. */
  supplied: boolean;
}

/**
 * The peers of one blob, refreshed from tracker lookups. One instance serves every download round of a
 * fetch: a peer that failed or lied stays known as such when a stalled round is followed by the next, and
 * when it leaves the tracker's list and comes back.
 */
export class SwarmPeers {
  private readonly peers = new Map<string, SwarmPeer>();
  private readonly verdicts = new Map<string, Verdict>();
  /** Active uploads of each peer as the tracker last told them (the ranking's load). */
  private readonly load = new Map<string, number>();
  /** When a holder last gained pieces, or one came that holds some (ms, performance.now). */
  private grownAtMs = Number.NEGATIVE_INFINITY;

  /** `zone`: this agent's zone; "" (unknown) treats every peer as local. */
  constructor(
    private readonly pieceCount: number,
    private readonly zone = "",
  ) {}

  /**
   * When this blob's swarm last moved, as far as this agent can tell (ms, performance.now; -Infinity before):
   * a holder gained pieces, one came that holds some, or a call to one of the peers received bytes. These are
   * peers' claims (and bytes not yet verified): the mirror lets them hold the runtime back for a bounded time
   * only (BlobLease.progressAtMs).
   */
  activityAtMs(): number {
    let at = this.grownAtMs;
    for (const peer of this.peers.values()) if (peer.dataAtMs > at) at = peer.dataAtMs;
    return at;
  }

  /** Merges a lookup's holders: new peers are added, known ones updated, vanished ones dropped. */
  update(holders: readonly HolderInfo[], nowMs: number): void {
    const seen = new Set<string>();
    holders.forEach((holder, rank) => {
      seen.add(holder.agentId);
      this.upsert(holder, rank, nowMs);
    });
    // A peer the tracker no longer lists is gone (deleted, evicted, disconnected) unless a request to it runs.
    for (const [id, peer] of this.peers) if (!seen.has(id) && peer.inflight === 0) this.peers.delete(id);
    for (const id of this.load.keys()) if (!this.peers.has(id)) this.load.delete(id);
  }

  /**
   * Merges the holders a notice says changed: known ones are updated, new ones added, none dropped (the
   * notice lists only what changed; the next lookup prunes), and all are ranked again as the tracker would
   * (rankPeers).
   */
  merge(holders: readonly HolderInfo[], nowMs: number, random: () => number): void {
    for (const holder of holders) this.upsert(holder, 0, nowMs);
    rankPeers(this.peers.values(), this.zone, this.pieceCount, (id) => this.load.get(id) ?? 0, random);
  }

  private upsert(holder: HolderInfo, rank: number, nowMs: number): void {
    this.load.set(holder.agentId, holder.activeUploads);
    const bitmap = holder.complete ? undefined : this.bitmapOf(holder.bitmap);
    const known = this.peers.get(holder.agentId);
    const local = this.zone === "" || holder.zone === this.zone;
    if (known) {
      known.address = holder.peerAddress;
      known.zone = holder.zone;
      known.local = local;
      known.rank = rank;
      if ((bitmap?.count ?? 0) > (known.bitmap?.count ?? 0) || (holder.complete && !known.complete)) {
        known.grewAtMs = nowMs;
        this.grownAtMs = nowMs;
      }
      known.complete = holder.complete;
      known.bitmap = bitmap;
      return;
    }
    if (holder.complete || (bitmap?.count ?? 0) > 0) this.grownAtMs = nowMs;
    const verdict = this.verdicts.get(holder.agentId);
    const given = verdict !== undefined && (verdict.bad || verdict.failures >= MAX_PEER_FAILURES);
    this.peers.set(holder.agentId, {
      agentId: holder.agentId,
      seed: rendezvousSeed(holder.agentId),
      address: holder.peerAddress,
      zone: holder.zone,
      local,
      rank,
      complete: holder.complete,
      bitmap,
      grewAtMs: nowMs,
      dataAtMs: Number.NEGATIVE_INFINITY,
      inflight: 0,
      failures: verdict?.failures ?? 0,
      excludedUntilMs: given ? Number.POSITIVE_INFINITY : 0,
      busyUntilMs: Number.NEGATIVE_INFINITY,
      busySinceMs: Number.NEGATIVE_INFINITY,
      badPieces: verdict?.bad ?? false,
    });
  }

  /** Every peer known for the blob, usable or not. */
  all(): SwarmPeer[] {
    return [...this.peers.values()];
  }

  /** Usable peers now (to be asked for pieces), best ranked first. */
  usable(nowMs: number): SwarmPeer[] {
    return [...this.peers.values()].filter((p) => p.excludedUntilMs <= nowMs && p.busyUntilMs <= nowMs).sort((a, b) => a.rank - b.rank);
  }

  /**
   * Peers left alone now only because they refused a call for lack of upload slots (busy), best ranked
   * first, while they are worth waiting for: refusing for less than `patienceMs`, or sending this agent
   * bytes within it (a peer serving this agent's other calls is alive, just full).
   */
  busyNow(nowMs: number, patienceMs: number): SwarmPeer[] {
    return [...this.peers.values()]
      .filter((p) => p.excludedUntilMs <= nowMs && isBusy(p, nowMs, patienceMs))
      .sort((a, b) => a.rank - b.rank);
  }

  /**
   * Agents this download cannot use for this blob: those that sent bad pieces, and those given up after
   * MAX_PEER_FAILURES failed calls. Named in the next grant request, so their copies do not keep the
   * tracker from granting this agent the origin.
   */
  excluded(): string[] {
    return [...this.verdicts].filter(([, v]) => v.bad || v.failures >= MAX_PEER_FAILURES).map(([agentId]) => agentId);
  }

  /** Agents that sent bad pieces for this blob. */
  isBad(agentId: string): boolean {
    return this.verdicts.get(agentId)?.bad === true;
  }

  get size(): number {
    return this.peers.size;
  }

  /** The peer refused a call for lack of upload slots: asked again after BUSY_BACKOFF_MS, and still a holder meanwhile. */
  busy(peer: SwarmPeer, nowMs: number): void {
    markBusy(peer, nowMs);
  }

  failed(peer: SwarmPeer, nowMs: number): void {
    peer.failures++;
    this.verdict(peer.agentId).failures = peer.failures;
    peer.excludedUntilMs = peer.failures >= MAX_PEER_FAILURES ? Number.POSITIVE_INFINITY : nowMs + FAILURE_BACKOFF_MS;
  }

  /**
   * Agents known to be bad for this blob before the download starts (a copy made from their pieces failed
   * its digest): never asked, and named to the tracker like those that sent bad pieces.
   */
  distrust(agentIds: Iterable<string>): void {
    for (const agentId of agentIds) {
      this.verdict(agentId).bad = true;
      const peer = this.peers.get(agentId);
      if (peer !== undefined) this.exclude(peer);
    }
  }

  /** A piece from this peer passed its hash check and was kept. */
  supplied(peer: SwarmPeer): void {
    this.verdict(peer.agentId).supplied = true;
  }

  /** Agents whose pieces this fetch kept. */
  suppliers(): string[] {
    return [...this.verdicts].filter(([, v]) => v.supplied).map(([agentId]) => agentId);
  }

  /** A peer that sent a piece not matching its hash is dropped for this blob. */
  exclude(peer: SwarmPeer): void {
    peer.excludedUntilMs = Number.POSITIVE_INFINITY;
    peer.badPieces = true;
    this.verdict(peer.agentId).bad = true;
  }

  private verdict(agentId: string): Verdict {
    let verdict = this.verdicts.get(agentId);
    if (verdict === undefined) {
      verdict = { failures: 0, bad: false, supplied: false };
      this.verdicts.set(agentId, verdict);
    }
    return verdict;
  }

  private bitmapOf(bytes: Uint8Array): PieceBitmap | undefined {
    try {
      return new PieceBitmap(this.pieceCount, bytes);
    } catch {
      return undefined;
    }
  }
}
