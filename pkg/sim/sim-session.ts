import { PieceBitmap } from "../piece/index.js";
import type { BlobChange, TrackerSession } from "../tracker/index.js";
import type { World } from "./sim-world.js";

/** Who a simulated agent is: agent-I on node-I, at an address of its own. */
export interface SimIdentity {
  readonly agentId: string;
  readonly index: number;
  readonly zone: string;
}

/**
 * One simulated agent's session with the tracker, as the agent keeps it: registration (asking for notices
 * or not), heartbeats with its upload count, progress announces of the blob (ProgressAnnouncer: the bitmap
 * and the hashes of pieces held since the last announce, at most every announceIntervalMs) and the
 * complete announce with every hash (InventorySync).
 */
export class SimSession {
  private session: TrackerSession | undefined;
  private readonly announced: PieceBitmap;
  private readonly bitmap: PieceBitmap;
  private lastAnnounceMs = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly world: Pick<World<unknown>, "config" | "tracker" | "digest" | "pieceCount" | "hashes">,
    private readonly self: SimIdentity,
    /** Each BlobChanged notice (and its change, if any), when the world's agents take notices (SimConfig.notices). */
    private readonly onNotice: (change: BlobChange | undefined) => void,
  ) {
    this.announced = new PieceBitmap(world.pieceCount);
    this.bitmap = new PieceBitmap(world.pieceCount);
  }

  /** Registers with the tracker (the agent's store holds nothing of the blob). */
  register(): void {
    const { agentId, index, zone } = this.self;
    const octet = (n: number): number => n & 0xff;
    this.session = this.world.tracker.register(
      { agentId, nodeName: `node-${index}`, zone, peerAddress: `10.${octet(index >> 16)}.${octet(index >> 8)}.${octet(index)}:5052` },
      this.world.config.notices
        ? {
            onNotice: (_digest, change) => {
              this.onNotice(change);
              return true;
            },
          }
        : {},
    );
  }

  heartbeat(activeUploads: number): void {
    this.session?.heartbeat(activeUploads);
  }

  /** Piece `index` is held now (and goes into the next announce's bitmap). */
  hold(index: number): void {
    this.bitmap.set(index);
  }

  /**
   * Announces the pieces `held` since the last announce, if the interval has passed (`force`: in any case).
   * True when it announced.
   */
  announce(held: Uint8Array, nowMs: number, force: boolean): boolean {
    const session = this.session;
    if (session === undefined) return false;
    if (!force && nowMs - this.lastAnnounceMs < this.world.config.tuning.announceIntervalMs) return false;
    const fresh: { index: number; sha256: Uint8Array }[] = [];
    for (let index = 0; index < this.world.pieceCount; index++) {
      if (held[index] === 0 || this.announced.has(index)) continue;
      this.announced.set(index);
      const sha256 = this.world.hashes[index];
      if (sha256 !== undefined) fresh.push({ index, sha256 });
    }
    if (fresh.length === 0 && !force) return false;
    this.lastAnnounceMs = nowMs;
    const { digest } = this.world;
    const { blobBytes: size, pieceBytes: pieceSize } = this.world.config;
    session.announce({ digest, size, pieceSize, complete: false, bitmap: this.bitmap.toBytes(), pieceHashes: fresh });
    return true;
  }

  /** The blob is whole: announced complete with every hash. */
  complete(): void {
    const { digest, hashes } = this.world;
    const { blobBytes: size, pieceBytes: pieceSize } = this.world.config;
    this.session?.announce({ digest, size, pieceSize, complete: true, pieceHashes: hashes.map((sha256, index) => ({ index, sha256 })) });
  }
}
