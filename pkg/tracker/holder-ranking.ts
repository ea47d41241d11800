import type { AgentIdentity, HolderInfo } from "./tracker.js";

/** A holder as ranked for one asker, with the key fields the order uses. */
export interface RankCandidate {
  readonly info: HolderInfo;
  readonly heldPieces: number;
}

/**
 * Orders holders for `asker`: same node, then same zone, then complete before partial, then fewest
 * active uploads, then most pieces. Ties are broken at random so that a burst of askers does not all
 * pick the same peer before its next heartbeat reports the extra load.
 */
export function rankHolders(asker: AgentIdentity, candidates: readonly RankCandidate[], random: () => number = Math.random): HolderInfo[] {
  const keyed = candidates.map((candidate) => ({ candidate, tiebreak: random() }));
  keyed.sort((a, b) => compare(asker, a.candidate, b.candidate) || a.tiebreak - b.tiebreak);
  return keyed.map(({ candidate }) => candidate.info);
}

function compare(asker: AgentIdentity, a: RankCandidate, b: RankCandidate): number {
  return (
    flag(b.info.nodeName === asker.nodeName) - flag(a.info.nodeName === asker.nodeName) ||
    flag(sameZone(asker, b.info)) - flag(sameZone(asker, a.info)) ||
    flag(b.info.complete) - flag(a.info.complete) ||
    a.info.activeUploads - b.info.activeUploads ||
    b.heldPieces - a.heldPieces
  );
}

function sameZone(asker: AgentIdentity, holder: AgentIdentity): boolean {
  return asker.zone !== "" && holder.zone === asker.zone;
}

function flag(value: boolean): number {
  return value ? 1 : 0;
}
