// The load generator's model of a cluster: a catalogue of blobs with a realistic spread of sizes and
// popularity (a few base layers on nearly every node, a long tail), each agent's inventory drawn from
// it, and the new image a cold rollout pulls. All of it deterministic from a seed, and pre-encoded:
// the same bytes serve every agent that sends them, so the generator costs little per message.
import { LookupRequest, SessionRequest } from "../../../pkg/gen/tracker/v1/tracker.js";
import { type Digest, digestOf } from "../../../pkg/oci/index.js";
import { PieceBitmap, choosePieceSize, pieceCount } from "../../../pkg/piece/index.js";
import { seededRandom } from "../../../pkg/sim/index.js";
import { announceRequest, heartbeatRequest, registerRequest } from "../../../pkg/tracker/index.js";
import { grpcFrame } from "./grpc-h2.js";

const MIB = 1024 * 1024;
/** Blobs in the cluster's catalogue. */
export const CATALOGUE_BLOBS = 3000;
/** The most popular blobs (base layers): on this share of the nodes each. */
const BASE_LAYERS = 20;
const BASE_LAYER_SHARE = 0.9;
/** Below the base layers popularity falls as (rank / BASE_LAYERS)^-TAIL_EXPONENT: ~200 blobs per node in all. */
const TAIL_EXPONENT = 0.75;
/** Blob sizes: log-normal around this median, clamped. */
const MEDIAN_BLOB_BYTES = 8 * MIB;
const SIZE_SIGMA = 1.5;
const MIN_BLOB_BYTES = 1024;
const MAX_BLOB_BYTES = 2048 * MIB;
/** The image a cold rollout pulls: its layers, largest first (the config is too small to matter). */
export const ROLLOUT_LAYER_BYTES = [400 * MIB, 200 * MIB, 100 * MIB, 50 * MIB] as const;
/** Progress announces per layer are drawn from this many stages of a growing bitmap. */
const PROGRESS_STAGES = 20;
/** Zones the agents are spread over (the ranking then has same-zone and other tiers). */
const ZONES = 3;

export interface CatalogueBlob {
  readonly digest: Digest;
  readonly size: number;
  /** The framed `announce` of the complete blob with all its piece hashes (what InventorySync sends). */
  readonly announce: Buffer;
}

export interface RolloutLayer {
  readonly digest: Digest;
  readonly size: number;
  /** Framed partial announces, bitmap growing stage by stage, each with the hashes of its new pieces. */
  readonly progress: readonly Buffer[];
  /** Framed complete announce. */
  readonly complete: Buffer;
}

export interface Workload {
  readonly catalogue: readonly CatalogueBlob[];
  readonly layers: readonly RolloutLayer[];
  readonly heartbeat: Buffer;
}

function fakeHash(digest: Digest, index: number): Uint8Array {
  const hash = new Uint8Array(32);
  for (let b = 0; b < 32; b++) hash[b] = (digest.charCodeAt(7 + b) + index * 31 + b) & 0xff;
  return hash;
}

function frameSession(request: SessionRequest): Buffer {
  return grpcFrame(SessionRequest.encode(request).finish());
}

/** Everything the generator sends, built once per process from the seed. */
export function buildWorkload(seed: number): Workload {
  const random = seededRandom(seed);
  const normal = (): number => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const catalogue = Array.from({ length: CATALOGUE_BLOBS }, (_, rank): CatalogueBlob => {
    const digest = digestOf(`tracker-bench blob ${rank}`);
    const size = Math.round(Math.min(MAX_BLOB_BYTES, Math.max(MIN_BLOB_BYTES, MEDIAN_BLOB_BYTES * Math.exp(SIZE_SIGMA * normal()))));
    const pieceSize = choosePieceSize(size);
    const pieceHashes = Array.from({ length: pieceCount(size, pieceSize) }, (_, index) => ({ index, sha256: fakeHash(digest, index) }));
    return { digest, size, announce: frameSession(announceRequest({ digest, size, pieceSize, complete: true, pieceHashes })) };
  });
  const layers = ROLLOUT_LAYER_BYTES.map((size, layer): RolloutLayer => {
    const digest = digestOf(`tracker-bench rollout layer ${layer}`);
    const pieceSize = choosePieceSize(size);
    const count = pieceCount(size, pieceSize);
    const bitmap = new PieceBitmap(count);
    const progress: Buffer[] = [];
    for (let stage = 1; stage <= PROGRESS_STAGES; stage++) {
      const fresh: { index: number; sha256: Uint8Array }[] = [];
      const upTo = Math.floor((count * stage) / (PROGRESS_STAGES + 1));
      for (let index = 0; index < upTo; index++) if (bitmap.set(index)) fresh.push({ index, sha256: fakeHash(digest, index) });
      progress.push(
        frameSession(announceRequest({ digest, size, pieceSize, complete: false, bitmap: bitmap.toBytes(), pieceHashes: fresh })),
      );
    }
    const pieceHashes = Array.from({ length: count }, (_, index) => ({ index, sha256: fakeHash(digest, index) }));
    return { digest, size, progress, complete: frameSession(announceRequest({ digest, size, pieceSize, complete: true, pieceHashes })) };
  });
  return { catalogue, layers, heartbeat: frameSession(heartbeatRequest(3)) };
}

/** Which catalogue blobs agent `index` holds: each base layer with BASE_LAYER_SHARE, the tail by popularity. */
export function inventoryOf(index: number, seed: number): number[] {
  const random = seededRandom((seed * 7919 + index * 104_729) >>> 0);
  const held: number[] = [];
  for (let rank = 0; rank < CATALOGUE_BLOBS; rank++) {
    const share = rank < BASE_LAYERS ? BASE_LAYER_SHARE : BASE_LAYER_SHARE * (rank / BASE_LAYERS) ** -TAIL_EXPONENT;
    if (random() < share) held.push(rank);
  }
  return held;
}

/** Agent `index`'s "pod IP": a distinct loopback address (127.0.0.0/8 is all local on Linux). */
export function agentAddress(index: number): string {
  return `127.${10 + Math.floor(index / 62_500)}.${1 + (Math.floor(index / 250) % 250)}.${1 + (index % 250)}`;
}

export function agentIdentity(index: number): { agentId: string; nodeName: string; zone: string; peerAddress: string } {
  return {
    agentId: `bench-agent-${index}`,
    nodeName: `bench-node-${index}`,
    zone: `zone-${index % ZONES}`,
    peerAddress: `${agentAddress(index)}:5052`,
  };
}

/** `resumeBlobs`: what the agent is about to re-announce (after a lost session), as Register says it. */
export function registerFrame(index: number, resumeBlobs = 0): Buffer {
  return frameSession(registerRequest(agentIdentity(index), resumeBlobs));
}

export function lookupFrame(index: number, digest: Digest, wantOriginGrant: boolean): Buffer {
  return grpcFrame(
    LookupRequest.encode({
      agentId: agentIdentity(index).agentId,
      digest,
      wantOriginGrant,
      excludedAgentIds: [],
      expectedSize: 0,
    }).finish(),
  );
}
