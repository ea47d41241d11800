import type { Digest } from "../oci/index.js";
import { PieceBitmap, sameHash } from "../piece/index.js";
import type { HolderInfo, LookupResult } from "../tracker/index.js";
import type { KnownPeer } from "./known-peers.js";
import type { PeerBlobStat, PieceSource } from "./piece-source.js";

/** Peers asked at once when the tracker cannot be. */
export const MAX_STAT_FANOUT = 8;
/** A peer that has not answered Stat by then is left out of this round. */
export const STAT_FANOUT_TIMEOUT_MS = 2_000;

export interface PeerLookupOptions {
  readonly digest: Digest;
  /** Who to ask, best first; at most MAX_STAT_FANOUT of them are. */
  readonly candidates: readonly KnownPeer[];
  readonly pieces: PieceSource;
  readonly signal: AbortSignal;
}

export interface PeerLookup {
  /** What the tracker would have answered, as far as the peers tell: holders, sizes, piece hashes; no grant. */
  readonly result: LookupResult;
  /** Holders the peers named in their peer exchange. */
  readonly exchanged: readonly KnownPeer[];
}

/**
 * The tracker's answer, rebuilt from the peers themselves (a bounded Stat fan-out): what a download uses
 * while the tracker is unreachable. Sizes are taken from the answers most peers agree on; a piece hash
 * peers disagree on is left unknown (the piece is then not taken until the tracker is back). No grant is
 * ever given: whoever fetches from the origin keeps doing so, and the others wait for it. Undefined when
 * no peer holds any of the blob.
 */
export async function lookupViaPeers(options: PeerLookupOptions): Promise<PeerLookup | undefined> {
  const asked = dedupe(options.candidates).slice(0, MAX_STAT_FANOUT);
  const attempt = AbortSignal.any([options.signal, AbortSignal.timeout(STAT_FANOUT_TIMEOUT_MS)]);
  const answers = await Promise.all(
    asked.map(async (peer) => {
      try {
        const stat = await options.pieces.stat(peer.peerAddress, options.digest, attempt);
        return stat === undefined ? undefined : { peer, stat };
      } catch {
        // Unreachable, refused or malformed: not a holder for this round.
        return undefined;
      }
    }),
  );
  options.signal.throwIfAborted();
  const held = answers.filter((a): a is { peer: KnownPeer; stat: PeerBlobStat } => a !== undefined);
  if (held.length === 0) return undefined;
  // The size and piece size most holders report; a peer reporting another is left out.
  const votes = new Map<string, number>();
  for (const { stat } of held) votes.set(`${stat.size}/${stat.pieceSize}`, (votes.get(`${stat.size}/${stat.pieceSize}`) ?? 0) + 1);
  const [winner] = [...votes].sort((a, b) => b[1] - a[1])[0] ?? ["", 0];
  const agreeing = held.filter(({ stat }) => `${stat.size}/${stat.pieceSize}` === winner);
  const first = agreeing[0]?.stat;
  if (first === undefined) return undefined;
  const count = first.size === 0 ? 0 : Math.ceil(first.size / first.pieceSize);
  const pieceHashes = mergeHashes(
    agreeing.map(({ stat }) => stat.pieceHashes),
    count,
  );
  const held_ = (stat: PeerBlobStat): number => (stat.complete ? count : new PieceBitmap(count, stat.bitmap).count);
  const holders: HolderInfo[] = agreeing
    .sort((a, b) => held_(b.stat) - held_(a.stat))
    .map(({ peer, stat }) => ({
      agentId: peer.agentId,
      nodeName: "",
      zone: "",
      peerAddress: peer.peerAddress,
      complete: stat.complete,
      bitmap: stat.complete ? new Uint8Array(0) : stat.bitmap,
      activeUploads: 0,
    }));
  const exchanged = dedupe(held.flatMap(({ stat }) => stat.holders));
  return {
    result: {
      size: first.size,
      pieceSize: first.pieceSize,
      holders,
      pieceHashes,
      askerZone: "",
      origin: { granted: false, granteeAgentId: undefined },
    },
    exchanged,
  };
}

/** Per piece, the hash every peer that gave one agrees on; undefined where none was given or they differ. */
function mergeHashes(lists: readonly (readonly (Uint8Array | undefined)[])[], count: number): (Uint8Array | undefined)[] {
  const merged: (Uint8Array | undefined)[] = new Array<Uint8Array | undefined>(count).fill(undefined);
  const conflicted = new Set<number>();
  for (const list of lists) {
    list.forEach((hash, index) => {
      if (hash === undefined || index >= count || conflicted.has(index)) return;
      const known = merged[index];
      if (known === undefined) merged[index] = hash;
      else if (!sameHash(known, hash)) {
        merged[index] = undefined;
        conflicted.add(index);
      }
    });
  }
  return merged;
}

function dedupe(peers: readonly KnownPeer[]): KnownPeer[] {
  const seen = new Set<string>();
  return peers.filter((peer) => {
    if (seen.has(peer.agentId)) return false;
    seen.add(peer.agentId);
    return true;
  });
}
