import { type FileHandle, open, rename, rm } from "node:fs/promises";
import type { Digest } from "../oci/index.js";
import { digestAlgorithm } from "../oci/index.js";
import { type DiskLayout, fsyncDir, readExactlyInto, writeFully } from "./disk-layout.js";
import { StoreError } from "./errors.js";
import type { KeyedMutex } from "./keyed-mutex.js";
import type { PartialBackend, PartialSnapshot, PublishedPieceHashes } from "./partial-backend.js";
import { encodePieceHashFile } from "./piece-hash-file.js";
import { encodePartialState } from "./partial-state.js";
import { errnoCode } from "./store-helpers.js";
import { writeFileAtomic } from "../util/index.js";

export interface DiskBackendContext {
  readonly layout: DiskLayout;
  /** Per-digest locks: blobLockKey for the blob file (publish vs. removal), partialLockKey for partial files. */
  readonly locks: KeyedMutex;
}

export function blobLockKey(digest: Digest): string {
  return `blob:${digest}`;
}

/** Creating a partial's files and removing a kept partial's files never interleave. */
export function partialLockKey(digest: Digest): string {
  return `partial:${digest}`;
}

export interface DiskPartialParams {
  readonly digest: Digest;
  readonly size: number;
  readonly pieceSize: number;
  readonly mediaType: string | undefined;
}

/**
 * A partial blob on disk: a sparse data file written with positional writes, and a state file replaced
 * atomically (see STATE_SAVE_INTERVAL_MS for the fsync policy). Publishing syncs the data, writes the
 * media-type sidecar, renames the data file to its blob name and syncs the directory.
 */
export class DiskPartialBackend implements PartialBackend {
  readonly persistent = true;
  private handle: FileHandle | undefined;
  private reopening: Promise<FileHandle> | undefined;
  private published = false;

  private constructor(
    private readonly context: DiskBackendContext,
    private readonly params: DiskPartialParams,
    handle: FileHandle,
  ) {
    this.handle = handle;
  }

  /** A new, empty partial (replacing any leftovers of the same digest). */
  static create(context: DiskBackendContext, params: DiskPartialParams): Promise<DiskPartialBackend> {
    const { layout, locks } = context;
    return locks.run(partialLockKey(params.digest), async () => {
      await rm(layout.partialStatePath(params.digest), { force: true });
      const handle = await open(layout.partialDataPath(params.digest), "w+", 0o644);
      try {
        // Sparse: no space is allocated until pieces are written.
        await handle.truncate(params.size);
      } catch (error: unknown) {
        await handle.close();
        throw error;
      }
      return new DiskPartialBackend(context, params, handle);
    });
  }

  /** Reopens a persisted partial whose state file was checked at start-up. */
  static resume(context: DiskBackendContext, params: DiskPartialParams): Promise<DiskPartialBackend> {
    return context.locks.run(partialLockKey(params.digest), async () => {
      const handle = await open(context.layout.partialDataPath(params.digest), "r+");
      try {
        const { size } = await handle.stat();
        if (size !== params.size)
          throw new StoreError("ERR_STORE_IO", `partial data of ${params.digest} has ${size} bytes, expected ${params.size}`);
      } catch (error: unknown) {
        await handle.close();
        throw error;
      }
      return new DiskPartialBackend(context, params, handle);
    });
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    await writeFully(this.writable(), offset, data);
  }

  async readInto(target: Uint8Array, offset: number): Promise<void> {
    await readExactlyInto(this.handle ?? (await this.reopen()), target, offset);
  }

  async persist(snapshot: PartialSnapshot): Promise<void> {
    const handle = this.handle;
    if (handle === undefined || this.published) return;
    // Order matters: the state may only name bytes that are already durable.
    await handle.datasync();
    const state = encodePartialState({ ...this.params, ...snapshot });
    const { layout } = this.context;
    await writeFileAtomic(layout.partialStatePath(this.params.digest), state, { tmpDir: layout.tmpDir, syncDir: false });
  }

  async publish(pieceHashes: PublishedPieceHashes | undefined): Promise<void> {
    const { layout, locks } = this.context;
    const { digest, mediaType } = this.params;
    const handle = this.writable();
    await locks.run(blobLockKey(digest), async () => {
      await handle.datasync();
      // Sidecars go first, so a visible blob always has its media type (and, unless a crash lost the
      // directory entry, its piece hashes; missing ones are computed again from the blob).
      if (mediaType !== undefined) {
        await writeFileAtomic(layout.metaPath(digest), JSON.stringify({ mediaType }), { tmpDir: layout.tmpDir, syncDir: false });
      } else {
        await rm(layout.metaPath(digest), { force: true });
      }
      if (pieceHashes !== undefined) {
        await writeFileAtomic(layout.piecesPath(digest), encodePieceHashFile(pieceHashes), { tmpDir: layout.tmpDir, syncDir: false });
      } else {
        await rm(layout.piecesPath(digest), { force: true });
      }
      await rename(layout.partialDataPath(digest), layout.blobPath(digest));
      // One directory sync makes both the sidecar and the blob durable.
      await fsyncDir(layout.blobDir(digestAlgorithm(digest)));
      this.published = true;
      await rm(layout.partialStatePath(digest), { force: true });
    });
  }

  async discard(): Promise<void> {
    await this.close();
    const { layout } = this.context;
    await rm(layout.partialDataPath(this.params.digest), { force: true });
    await rm(layout.partialStatePath(this.params.digest), { force: true });
  }

  async keep(snapshot: PartialSnapshot): Promise<void> {
    try {
      await this.persist(snapshot);
    } finally {
      await this.close();
    }
  }

  async close(): Promise<void> {
    const handle = this.handle;
    const reopening = this.reopening;
    this.handle = undefined;
    this.reopening = undefined;
    await handle?.close();
    if (reopening !== undefined) await (await reopening.catch(() => undefined))?.close();
  }

  private writable(): FileHandle {
    if (this.handle === undefined || this.published) throw new StoreError("ERR_STORE_IO", `partial ${this.params.digest} is closed`);
    return this.handle;
  }

  /** After publish and close, a new reader reads the complete blob (it may have been evicted since: ENOENT). */
  private reopen(): Promise<FileHandle> {
    if (!this.published) return Promise.reject(new StoreError("ERR_STORE_IO", `partial ${this.params.digest} is closed`));
    if (this.reopening === undefined) {
      const opening = open(this.context.layout.blobPath(this.params.digest), "r").catch((error: unknown) => {
        if (errnoCode(error) !== "ENOENT") throw error;
        throw new StoreError("ERR_STORE_BLOB_NOT_FOUND", `blob ${this.params.digest} is gone`, { cause: error });
      });
      this.reopening = opening;
      opening.then(
        (handle) => {
          if (this.reopening !== opening) return;
          this.reopening = undefined;
          this.handle = handle;
        },
        () => {
          if (this.reopening === opening) this.reopening = undefined;
        },
      );
    }
    return this.reopening;
  }
}
