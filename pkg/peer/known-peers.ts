import type { Digest } from "../oci/index.js";

/** An agent this one has heard of, and where its PeerService is. */
export interface KnownPeer {
  readonly agentId: string;
  readonly peerAddress: string;
}

/** Blobs whose holders are remembered (least recently told first out). */
const MAX_BLOBS = 1024;
/** Holders remembered per blob, and peers listed in a Stat's peer exchange. */
export const MAX_HOLDERS_PER_BLOB = 16;
/** Peers remembered overall, for asking around about a blob nobody has told this agent of. */
const MAX_RECENT_PEERS = 64;

/**
 * The agents this one has heard of, from the tracker's lookups and from peers (peer exchange in Stat):
 * what a download falls back on while the tracker is unreachable. Bounded in every dimension; the most
 * recent news wins.
 */
export class KnownPeers {
  private readonly byBlob = new Map<Digest, Map<string, string>>();
  private readonly recentPeers = new Map<string, string>();

  /** Records holders of `digest` (a lookup's answer, a Stat's peer exchange), `self` excluded. */
  remember(digest: Digest, holders: readonly KnownPeer[], selfAgentId?: string): void {
    if (holders.length === 0) return;
    const known = this.byBlob.get(digest) ?? new Map<string, string>();
    this.byBlob.delete(digest);
    this.byBlob.set(digest, known);
    for (const { agentId, peerAddress } of holders) {
      if (agentId === selfAgentId || agentId === "" || peerAddress === "") continue;
      known.delete(agentId);
      known.set(agentId, peerAddress);
      this.recentPeers.delete(agentId);
      this.recentPeers.set(agentId, peerAddress);
    }
    trim(known, MAX_HOLDERS_PER_BLOB);
    trim(this.recentPeers, MAX_RECENT_PEERS);
    trim(this.byBlob, MAX_BLOBS);
  }

  /** Holders last heard of for `digest`, most recent first. */
  holdersOf(digest: Digest): KnownPeer[] {
    return [...(this.byBlob.get(digest) ?? [])].reverse().map(([agentId, peerAddress]) => ({ agentId, peerAddress }));
  }

  /** Peers last heard of for any blob, most recent first. */
  recent(limit: number): KnownPeer[] {
    return [...this.recentPeers]
      .reverse()
      .slice(0, limit)
      .map(([agentId, peerAddress]) => ({ agentId, peerAddress }));
  }
}

/** Drops the oldest entries (Map keeps insertion order) down to `max`. */
function trim<K, V>(map: Map<K, V>, max: number): void {
  for (const key of map.keys()) {
    if (map.size <= max) return;
    map.delete(key);
  }
}
