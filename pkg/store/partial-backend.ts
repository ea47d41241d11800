import type { BlobInfo } from "./blob-store.js";

/** Piece hashes as a store keeps them beside a complete blob. */
export interface PublishedPieceHashes {
  readonly pieceSize: number;
  /** PIECE_HASH_BYTES per piece, in order. */
  readonly packed: Uint8Array;
}

/** What a partial persists to be resumed: the held pieces and how far `append` got. */
export interface PartialSnapshot {
  readonly bitmap: Uint8Array;
  readonly appendOffset: number;
}

/** Where a partial's bytes live. CorePartialBlob decides what to write and when; the backend only does it. */
export interface PartialBackend {
  /** True if `persist` saves anything (disk); the core then schedules it. */
  readonly persistent: boolean;
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Fills `target` with the bytes at `offset`; keeps working after publish (from the complete blob). */
  readInto(target: Uint8Array, offset: number): Promise<void>;
  /** Makes everything written so far durable, then records `snapshot` as the resumable state. */
  persist(snapshot: PartialSnapshot): Promise<void>;
  /**
   * Makes the verified content the complete blob (disk: sync, rename, sync directory), with the SHA-256 of
   * every piece (`pieceHashes`, packed) recorded beside it, or nothing recorded when undefined.
   */
  publish(pieceHashes: PublishedPieceHashes | undefined): Promise<void>;
  /** Deletes the partial's data. */
  discard(): Promise<void>;
  /** Persists `snapshot` for a later resume and releases write resources. */
  keep(snapshot: PartialSnapshot): Promise<void>;
  /** Releases what remains once nobody reads; `read` may reopen afterwards. */
  close(): Promise<void>;
}

export interface PartialHooks {
  /** Called once the content is published: the store makes the blob visible. */
  committed(info: BlobInfo): Promise<void>;
  /** Called once an aborted partial's data is kept (with the snapshot) or discarded. */
  aborted(kept: PartialSnapshot | undefined): void;
}

/**
 * Runs `save` at most once per `intervalMs`, never two at a time, and once more if a request came in while
 * a save was running. Timers are unref'd: a pending save never keeps the process alive.
 */
export class ThrottledSaver {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private dirty = false;
  private stopped = false;
  private lastStartMs = Date.now();

  constructor(
    private readonly save: () => Promise<void>,
    private readonly intervalMs: number,
    private readonly onError: (error: unknown) => void,
  ) {}

  request(): void {
    if (this.stopped) return;
    this.dirty = true;
    if (this.timer !== undefined || this.running !== undefined) return;
    const delayMs = Math.max(0, this.lastStartMs + this.intervalMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.run();
    }, delayMs);
    this.timer.unref();
  }

  /** Cancels pending saves and waits for a running one. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.running !== undefined) await this.running;
  }

  private run(): void {
    if (this.stopped) return;
    this.dirty = false;
    this.lastStartMs = Date.now();
    this.running = this.save()
      .catch(this.onError)
      .finally(() => {
        this.running = undefined;
        if (this.dirty) this.request();
      });
  }
}
