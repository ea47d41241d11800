import type { AgentIdentity } from "./tracker.js";

/** Room for each key field inside one number (exact in a double: the whole key stays below 2^40). */
const UPLOAD_SPAN = 2 ** 20;
const PIECE_SPAN = 2 ** 17;

/**
 * The order of holders for `asker` as one number, smaller first: same node, then same zone, then
 * complete before partial, then fewest active uploads, then most pieces. A lookup sorts by it plus a
 * random fraction, so ties fall at random and no comparator runs per pair.
 */
export function rankKey(asker: AgentIdentity, holder: AgentIdentity, complete: boolean, activeUploads: number, heldPieces: number): number {
  const tier =
    (holder.nodeName === asker.nodeName ? 0 : 4) + (asker.zone !== "" && holder.zone === asker.zone ? 0 : 2) + (complete ? 0 : 1);
  const uploads = Math.min(activeUploads, UPLOAD_SPAN - 1);
  const missing = PIECE_SPAN - 1 - Math.min(heldPieces, PIECE_SPAN - 1);
  return (tier * UPLOAD_SPAN + uploads) * PIECE_SPAN + missing;
}
