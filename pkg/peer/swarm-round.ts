import type { Logger } from "pino";
import type { AgentMetrics } from "../metrics/index.js";
import type { PartialBlob } from "../store/index.js";
import type { LookupResult, Tracker } from "../tracker/index.js";
import type { KnownPeers } from "./known-peers.js";
import type { PiecePicker } from "./piece-picker.js";
import type { PieceSource } from "./piece-source.js";
import type { ReceiveBudget } from "./receive-budget.js";
import type { SwarmPeers } from "./swarm-peers.js";
import type { SwarmTuning } from "./swarm-tuning.js";

// One round of a swarm fetch, as the fetcher and the download see it: what a SwarmDownload is given (its
// context, this agent's identity and zone) and how it ends (SwarmOutcome).

/** The zone the swarm prefers: this agent's own, or (Kubernetes: a Pod cannot read its Node's labels) the tracker's. */
export function swarmZone(self: SwarmSelf | undefined, lookup: LookupResult): string {
  return self === undefined ? "" : self.zone !== "" ? self.zone : lookup.askerZone;
}

export interface SwarmSelf {
  readonly agentId: string;
  /** topology.kubernetes.io/zone; "" (unknown) makes every peer count as same-zone: no preference. */
  readonly zone: string;
}

export interface SwarmDownloadContext {
  readonly partial: PartialBlob;
  readonly tracker: Tracker;
  readonly pieces: PieceSource;
  /** Expected piece hashes, from the tracker; shared by every round of one fetch. */
  readonly hashes: (Uint8Array | undefined)[];
  readonly metrics: AgentMetrics;
  readonly logger: Logger;
  readonly tuning: SwarmTuning;
  /** Undefined: zones are not in play (every peer is preferred alike, bytes are counted as zone "unknown"). */
  readonly self: SwarmSelf | undefined;
  readonly signal: AbortSignal;
  /** The lookup that started the download. */
  readonly first: LookupResult;
  /**
   * The blob's peers, shared by every download round of one fetch (see SwarmPeers), built for this
   * agent's zone (swarmZone).
   */
  readonly peers: SwarmPeers;
  /**
   * What to ask of whom (built by the fetcher for this agent's zone), shared by every download round of one fetch like
   * `peers`: what a round learned about the zone's siblings and seeds (how long a piece has waited for the
   * sibling whose share it is) carries into the next. A fresh picker per round would wait for that sibling
   * again from the start, and a round that stalls before the wait ends would do so round after round.
   */
  readonly picker: PiecePicker;
  /** Tie-break randomness among peers ranked alike (SwarmPeers.merge); Math.random by default. */
  readonly random?: () => number;
  /** The agents this one has heard of: remembered from lookups, asked while the tracker is unreachable. */
  readonly knownPeers?: KnownPeers | undefined;
  /** `first` came from the peers (lookupViaPeers), not the tracker. */
  readonly degraded?: boolean;
  /** The blob's size as the agent knows it (a manifest's descriptor): asked of the tracker with every lookup. */
  readonly expectedSize?: number | undefined;
  /**
   * What this agent's downloads together may ask for at once (the fetcher's). Not used for a small blob,
   * which goes ahead (SMALL_READ_BYTES). Without one, only maxInflightPerPeer limits the requests.
   */
  readonly budget?: ReceiveBudget | undefined;
}

/**
 * How a swarm download ended: all pieces held; or no progress for a while, with `suppliers` = usable
 * peers that hold some missing piece (0: no peer can supply the rest, only the origin can).
 */
export type SwarmOutcome =
  | { readonly kind: "complete" }
  | {
      readonly kind: "stalled";
      /** `orphaned`: no grantee and no peer holding a missing piece (orphanedMs); `silent`: no progress for stallMs. */
      readonly reason: "orphaned" | "silent";
      readonly suppliers: number;
      readonly excludedAgents: readonly string[];
      /** The origin grantee (another agent) gained pieces within stallMs: the rest is coming, no need for the origin. */
      readonly granteeProgressing: boolean;
    };
