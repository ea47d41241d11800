import type { Digest } from "../oci/index.js";
import type { PieceRequest, SwarmPeer } from "../peer/index.js";
import type { BlobChange, MemoryTracker } from "../tracker/index.js";
import type { SimConfig } from "./config.js";

/**
 * What an agent sees of the simulated world (the Simulation), for agents of type `Agent` (SimAgent): what
 * every agent shares, and the world's side of its calls.
 */
export interface World<Agent> {
  readonly config: SimConfig;
  readonly tracker: MemoryTracker;
  readonly digest: Digest;
  readonly pieceCount: number;
  /** The SHA-256 of each piece as the grantee computes it (stand-ins: one array per piece). */
  readonly hashes: readonly Uint8Array[];
  /** Opens a ReadPieces call to `peer`; false when it refused (all upload slots busy). */
  openCall(agent: Agent, peer: SwarmPeer, request: PieceRequest, waitMs: number): boolean;
  /** Fetches the pieces `agent` lacks from the origin, in order. */
  openOrigin(agent: Agent): void;
  /** Cancels `agent`'s calls (its download round ended); their bytes in flight are wasted. */
  abortCalls(agent: Agent): void;
  /** Runs `agent.step` at `atMs` (or earlier if already due). */
  wake(agent: Agent, atMs: number): void;
  /** An agent finished: the simulation counts it. */
  completed(agent: Agent): void;
  /** The tracker sent `agent` a BlobChanged notice (with its change, if any): it arrives a little later (agent.notice). */
  notice(agent: Agent, change: BlobChange | undefined): void;
}

/** What one agent did, summed by the simulation into its result. */
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
