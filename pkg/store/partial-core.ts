import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import type { Logger } from "pino";
import { digestAlgorithm, type Digest } from "../oci/index.js";
import { PIECE_HASH_BYTES, PieceBitmap, choosePieceSize, packPieceHashes, pieceCount, pieceSpan, sha256Of } from "../piece/index.js";
import type { BlobInfo, BlobReader, PartialBlob, ReadOptions } from "./blob-store.js";
import { type ContentHasher, type HashedPiece, type HashTargets, InlineContentHasher } from "./content-hasher.js";
import { StoreError } from "./errors.js";
import {
  type PartialBackend,
  type PartialHooks,
  type PartialSnapshot,
  type PublishedPieceHashes,
  ThrottledSaver,
} from "./partial-backend.js";
import { PieceWaiters } from "./piece-waiters.js";
import { ioError, resolveRange } from "./store-helpers.js";
import { type FreshBytes, TailReadable, type TailSource } from "./tail-readable.js";
import { WorkerContentHasher } from "./worker-content-hasher.js";

/** Chunk size when hashing bytes back from storage (pieces that arrived ahead of the hashed prefix). */
export const HASH_CHUNK_BYTES = 1024 * 1024;
/**
 * Fsync policy of persistent partials: piece data is written with positional writes and not synced per
 * write; at most once per STATE_SAVE_INTERVAL_MS (and when kept on abort/close) the data file is
 * fdatasync'd and only then the state file naming the held pieces is replaced atomically. A state file
 * therefore never claims bytes that are not durable; after a crash it may lag the data by up to an
 * interval, which only costs re-fetching those bytes. Every fdatasync also forces the blob's dirty pages
 * out to disk while it is still arriving; 5 s keeps that off the transfer's critical path on slow disks.
 */
export const STATE_SAVE_INTERVAL_MS = 5000;

export interface CorePartialOptions {
  readonly digest: Digest;
  readonly size: number;
  readonly pieceSize: number;
  readonly mediaType: string | undefined;
  readonly backend: PartialBackend;
  readonly hooks: PartialHooks;
  /** State of a resumed partial; its bytes are re-hashed from the backend. */
  readonly resume?: PartialSnapshot | undefined;
  readonly stateSaveIntervalMs?: number | undefined;
  /**
   * Hash in the process's hash worker thread instead of on the event loop (large blobs: the two SHA-256
   * passes are the largest CPU cost of a pull-through, and the event loop also receives and serves).
   */
  readonly hashInWorker?: boolean | undefined;
  readonly logger?: Logger | undefined;
}

/**
 * The PartialBlob state machine shared by both stores.
 *
 * Mutations (append, writePiece, commit, settling) run one at a time on a queue. A running hash covers
 * the contiguous prefix [0, hashedEnd): bytes that extend it are hashed from memory as they are written;
 * bytes that arrived ahead of it (out-of-order pieces, resumed data) are read back once the prefix reaches
 * them, by a catch-up step queued right after the write that made them contiguous. So commit() only
 * finishes the hash instead of re-reading the blob.
 *
 * Piece hashes are recorded as pieces become held: from the caller of writePiece (who checked them), or
 * computed while `append` writes a piece from its first byte (SequentialPieceHasher). So the hash of each
 * byte is taken twice at most (piece and blob), and nothing is read back to hash pieces except pieces
 * resumed from an earlier process, which commit() hashes from storage. Both hashes are taken by a
 * ContentHasher, on the event loop or in the hash worker thread, while the bytes are being written.
 *
 * Invariant: every byte in [0, appendOffset) is written, and appendOffset is the end of the contiguous
 * available run (appended bytes and held pieces) from the start.
 */
export class CorePartialBlob implements PartialBlob, TailSource {
  readonly digest: Digest;
  readonly size: number;
  readonly pieceSize: number;
  readonly pieceCount: number;
  readonly mediaType: string | undefined;

  private current: "open" | "committed" | "aborted" = "open";
  private reason: Error | undefined;
  private readonly pieces: PieceBitmap;
  /** Pieces 0..prefixPieces-1 are held. */
  private prefixPieces = 0;
  /** End of the bytes written by append (all of [0, appendedEnd) are written). */
  private appendedEnd: number;
  private hashedEnd = 0;
  private readonly hasher: ContentHasher;
  private readonly pieceHashes: (Uint8Array | undefined)[];
  /** Reused by the hash catch-up (one at a time: it runs on the queue); dropped once settled. */
  private scratch: Buffer | undefined;
  private queueTail: Promise<unknown> = Promise.resolve();
  private catchUpQueued = false;
  private committing = false;
  /** The whole content matched the digest (it may still be being published). */
  private verifiedContent = false;
  private info: BlobInfo | undefined;
  private readonly listeners = new Set<(fresh?: FreshBytes) => void>();
  private readonly waiters = new PieceWaiters();
  private readers = 0;
  private backendOpen = true;
  private settlement: Promise<void> | undefined;
  private readonly settledSignal = Promise.withResolvers<undefined>();
  private readonly backend: PartialBackend;
  private readonly hooks: PartialHooks;
  private readonly logger: Logger | undefined;
  private readonly saver: ThrottledSaver | undefined;

  constructor(options: CorePartialOptions) {
    this.digest = options.digest;
    this.size = options.size;
    this.pieceSize = options.pieceSize;
    this.pieceCount = pieceCount(options.size, options.pieceSize);
    this.mediaType = options.mediaType;
    this.backend = options.backend;
    this.hooks = options.hooks;
    this.logger = options.logger;
    const backend = options.backend;
    this.saver = backend.persistent
      ? new ThrottledSaver(
          () => backend.persist(this.snapshot()),
          options.stateSaveIntervalMs ?? STATE_SAVE_INTERVAL_MS,
          (error: unknown) => {
            // Not fatal: the data is intact; a resume after a crash just starts from an older bitmap.
            this.logger?.warn({ err: error, digest: this.digest }, "saving partial state failed");
          },
        )
      : undefined;
    const hasherParams = { algorithm: digestAlgorithm(options.digest), size: this.size, pieceSize: this.pieceSize };
    this.hasher = options.hashInWorker === true ? new WorkerContentHasher(hasherParams) : new InlineContentHasher(hasherParams);
    this.pieceHashes = new Array<Uint8Array | undefined>(this.pieceCount).fill(undefined);
    this.pieces = new PieceBitmap(this.pieceCount, options.resume?.bitmap);
    this.appendedEnd = Math.min(options.resume?.appendOffset ?? 0, this.size);
    // A resumed appendOffset vouches for every byte before it, so pieces it covers are held.
    for (let index = 0; index < this.pieceCount && this.span(index).end <= this.appendedEnd; index++) this.pieces.set(index);
    this.advance(false);
  }

  get state(): "open" | "committed" | "aborted" {
    return this.current;
  }

  /** Whether the content matched its digest: the final byte may be served from here on. */
  get verified(): boolean {
    return this.verifiedContent && this.current !== "aborted";
  }

  get heldPieces(): number {
    return this.pieces.count;
  }

  get appendOffset(): number {
    const prefixEnd = this.prefixPieces === this.pieceCount ? this.size : this.prefixPieces * this.pieceSize;
    return Math.max(this.appendedEnd, prefixEnd);
  }

  hasPiece(index: number): boolean {
    return this.pieces.has(index);
  }

  bitmap(): Uint8Array {
    return this.pieces.toBytes();
  }

  append(chunk: Uint8Array, offset?: number): Promise<void> {
    return this.enqueue(async () => {
      this.assertOpen();
      const start = offset ?? this.appendOffset;
      if (!Number.isSafeInteger(start) || start < 0)
        throw new StoreError("ERR_STORE_INVALID_ARGUMENT", `append offset ${String(offset)} is not a byte position`);
      const end = start + chunk.byteLength;
      if (end > this.size) {
        throw new StoreError(
          "ERR_STORE_INVALID_ARGUMENT",
          `append of ${chunk.byteLength} bytes at offset ${start} passes the end of ${this.digest} (${this.size} bytes)`,
        );
      }
      // The digest is fed as the bytes are written only once its hasher is ready; until then the catch-up
      // reads them back (ContentHasher.ready).
      let feeding = start === this.hashedEnd && this.hasher.ready;
      for (let offset = start; offset < end;) {
        this.assertOpen();
        const index = Math.floor(offset / this.pieceSize);
        if (this.pieces.has(index)) {
          // A piece already held (checked by its hash) is kept; the catch-up hashes it from storage.
          feeding = false;
          offset = Math.min(this.span(index).end, end);
          this.appendedEnd = Math.max(this.appendedEnd, offset);
          this.advance(true);
          continue;
        }
        // One write for the whole run of pieces not held yet; they are marked once it landed.
        let runEnd = Math.min(this.span(index).end, end);
        while (runEnd < end && !this.pieces.has(Math.floor(runEnd / this.pieceSize)))
          runEnd = Math.min(this.span(Math.floor(runEnd / this.pieceSize)).end, end);
        const segment = chunk.subarray(offset - start, runEnd - start);
        // Hash while the thread pool writes: the segment is not modified meanwhile, and a failed write
        // fails the whole partial, so a hash fed ahead of the write can never vouch for missing bytes
        // (piece hashes are recorded only for pieces that become held below).
        const hashed = await this.writeAndHash(offset, segment, { blob: feeding, pieces: true });
        for (const { index: piece, sha256 } of hashed) this.pieceHashes[piece] ??= sha256;
        this.assertOpen();
        if (feeding) this.hashedEnd = runEnd;
        this.appendedEnd = Math.max(this.appendedEnd, runEnd);
        for (let piece = index; piece < this.pieceCount && this.span(piece).end <= runEnd; piece++) this.pieces.set(piece);
        // Tailing readers may take these bytes from memory now, instead of reading them back from storage.
        this.advance(true, { position: offset, bytes: segment });
        offset = runEnd;
      }
    });
  }

  writePiece(index: number, data: Uint8Array, sha256?: Uint8Array): Promise<void> {
    return this.enqueue(async () => {
      if (!Number.isSafeInteger(index) || index < 0 || index >= this.pieceCount) {
        throw new StoreError("ERR_STORE_INVALID_ARGUMENT", `piece ${String(index)} out of range 0..${this.pieceCount - 1}`);
      }
      const span = this.span(index);
      if (data.byteLength !== span.end - span.start) {
        throw new StoreError("ERR_STORE_INVALID_ARGUMENT", `piece ${index} must be ${span.end - span.start} bytes, got ${data.byteLength}`);
      }
      if (this.current === "aborted") this.assertOpen();
      if (this.current === "committed" || this.pieces.has(index)) return;
      // Bytes of this piece that append already wrote stay as they are: they may already be hashed.
      const from = Math.max(span.start, this.appendOffset);
      const bytes = data.subarray(from - span.start);
      const feeding = this.hashedEnd === from && this.hasher.ready;
      await this.writeAndHash(from, bytes, { blob: feeding, pieces: false });
      this.assertOpen();
      if (feeding) this.hashedEnd = span.end;
      this.pieceHashes[index] = sha256 !== undefined && sha256.byteLength === PIECE_HASH_BYTES ? sha256 : sha256Of(data);
      this.pieces.set(index);
      this.advance(true);
    });
  }

  pieceHash(index: number): Uint8Array | undefined {
    return this.pieces.has(index) ? this.pieceHashes[index] : undefined;
  }

  openReader(): BlobReader {
    this.acquireReader();
    let open = true;
    return {
      size: this.size,
      read: async (target: Uint8Array, position: number) => {
        if (!open) throw new StoreError("ERR_STORE_INVALID_ARGUMENT", `reader of ${this.digest} is closed`);
        const end = position + target.byteLength;
        if (this.current === "aborted") throw this.abortError();
        // The final byte only once the digest is verified (BlobStore invariant).
        const limit = this.verified ? this.size : this.size - 1;
        if (!Number.isSafeInteger(position) || position < 0 || end > limit || this.availableEnd(position, end) < end) {
          throw new StoreError("ERR_STORE_INVALID_ARGUMENT", `bytes ${position}..${end - 1} of ${this.digest} are not held`);
        }
        await this.readInto(target, position);
      },
      close: () => {
        if (open) {
          open = false;
          this.releaseReader();
        }
        return Promise.resolve();
      },
    };
  }

  createReadStream(options?: ReadOptions): Readable {
    return new TailReadable(this, resolveRange(this.size, options), options?.signal);
  }

  waitForPiece(index: number, signal?: AbortSignal): Promise<void> {
    if (!Number.isSafeInteger(index) || index < 0 || index >= this.pieceCount) {
      return Promise.reject(new StoreError("ERR_STORE_INVALID_ARGUMENT", `piece ${String(index)} out of range`));
    }
    if (this.pieces.has(index) || this.current === "committed") return Promise.resolve();
    if (this.current === "aborted") return Promise.reject(this.abortError());
    return this.waiters.wait(index, signal);
  }

  commit(): Promise<BlobInfo> {
    if (this.info !== undefined) return Promise.resolve(this.info);
    return this.enqueue(async () => {
      if (this.info !== undefined) return this.info;
      this.assertOpen();
      if (!this.pieces.complete) {
        throw new StoreError(
          "ERR_STORE_INCOMPLETE",
          `${this.pieceCount - this.pieces.count} of ${this.pieceCount} pieces of ${this.digest} missing`,
        );
      }
      await this.catchUp();
      this.assertOpen();
      let hex: string;
      try {
        hex = await this.hasher.digest();
      } catch (error: unknown) {
        throw await this.fail(error, `hashing ${this.digest}`);
      }
      this.assertOpen();
      const actual = `${digestAlgorithm(this.digest)}:${hex}`;
      if (actual !== this.digest) {
        const error = new StoreError("ERR_STORE_DIGEST_MISMATCH", `content written for ${this.digest} hashes to ${actual}`);
        this.markAborted(error);
        await this.settle(false);
        throw error;
      }
      // From here an external abort waits for the outcome instead of racing the publication.
      this.committing = true;
      // The content is verified: tailing readers may have the final byte now, while it is made durable
      // (fsync, rename), which on a slow disk takes seconds for a large blob.
      this.verifiedContent = true;
      this.notify();
      await this.saver?.stop();
      try {
        await this.backend.publish(await this.completePieceHashes());
      } catch (error: unknown) {
        throw await this.fail(error, `publishing ${this.digest}`);
      }
      const info: BlobInfo =
        this.mediaType === undefined
          ? { digest: this.digest, size: this.size }
          : { digest: this.digest, size: this.size, mediaType: this.mediaType };
      this.info = info;
      this.current = "committed";
      this.settlement = Promise.resolve();
      try {
        await this.hooks.committed(info);
      } finally {
        this.settledSignal.resolve(undefined);
      }
      this.waiters.wakeHeld(() => true);
      this.notify();
      this.maybeCloseBackend();
      return info;
    });
  }

  async abort(reason: Error, options?: { keepData?: boolean }): Promise<void> {
    if (this.committing || this.current !== "open") {
      await this.settledSignal.promise;
      return;
    }
    this.markAborted(reason);
    const keep = options?.keepData === true;
    // Queued behind the write in flight, if any; writes queued after it see the aborted state and stop.
    await this.enqueue(() => this.settle(keep));
  }

  /** Resolves once the partial is committed, or aborted and its data kept or discarded. */
  whenSettled(): Promise<void> {
    return this.settledSignal.promise;
  }

  // --- TailSource ---

  abortError(): Error {
    return this.reason ?? new StoreError("ERR_STORE_ABORTED", `partial ${this.digest} was aborted`);
  }

  availableEnd(position: number, limit: number): number {
    if (this.current === "committed" || this.verified) return limit;
    let end = Math.max(position, this.appendOffset);
    while (end < limit) {
      const index = Math.floor(end / this.pieceSize);
      if (!this.pieces.has(index)) break;
      end = this.span(index).end;
    }
    return Math.min(end, limit);
  }

  async readInto(target: Uint8Array, position: number): Promise<void> {
    try {
      await this.backend.readInto(target, position);
    } catch (error: unknown) {
      throw ioError(`reading ${this.digest} at ${position}`, error);
    }
  }

  onProgress(listener: (fresh?: FreshBytes) => void): () => void {
    const slot = (fresh?: FreshBytes): void => {
      listener(fresh);
    };
    this.listeners.add(slot);
    return () => {
      this.listeners.delete(slot);
    };
  }

  acquireReader(): void {
    this.readers++;
    this.backendOpen = true;
  }

  releaseReader(): void {
    this.readers--;
    this.maybeCloseBackend();
  }

  // --- internals ---

  private span(index: number): { start: number; end: number } {
    return pieceSpan(index, this.size, this.pieceSize);
  }

  private enqueue<T>(op: () => Promise<T>): Promise<T> {
    const result = this.queueTail.then(op);
    this.queueTail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  private assertOpen(): void {
    if (this.current === "aborted") {
      throw new StoreError("ERR_STORE_ABORTED", `partial ${this.digest} was aborted`, { cause: this.reason });
    }
    if (this.current === "committed") throw new StoreError("ERR_STORE_INVALID_ARGUMENT", `partial ${this.digest} is already committed`);
  }

  private async write(offset: number, data: Uint8Array): Promise<void> {
    try {
      await this.backend.write(offset, data);
    } catch (error: unknown) {
      throw await this.fail(error, `writing ${data.byteLength} bytes of ${this.digest} at ${offset}`);
    }
  }

  /**
   * Writes `data` at `offset` and feeds it to the hasher meanwhile; a failed write is reported before a
   * failed hash, and neither returns before both are done (the bytes stay untouched until then).
   */
  private async writeAndHash(offset: number, data: Uint8Array, targets: HashTargets): Promise<readonly HashedPiece[]> {
    if (!targets.blob && !targets.pieces) {
      await this.write(offset, data);
      return [];
    }
    const completed: HashedPiece[] = [];
    for (let done = 0; done < data.byteLength;) {
      // Written from where the hasher reads it, so the bytes come from memory once.
      const part = this.hasher.stage(data.subarray(done));
      const written = this.write(offset + done, part);
      const hashed = this.hasher.update(offset + done, part, targets);
      const [write, hash] = await Promise.allSettled([written, hashed]);
      if (write.status === "rejected") throw write.reason;
      if (hash.status === "rejected") throw await this.fail(hash.reason, `hashing ${this.digest} at ${offset + done}`);
      completed.push(...hash.value);
      done += part.byteLength;
      this.assertOpen();
    }
    return completed;
  }

  /** A storage failure ends the partial: readers and waiters get the error, the data is discarded. */
  private async fail(error: unknown, what: string): Promise<StoreError> {
    const failure = ioError(`${what} failed`, error);
    if (this.current === "open") {
      this.logger?.warn({ err: failure, digest: this.digest }, "partial blob failed");
      this.markAborted(failure);
      await this.settle(false);
    }
    return failure;
  }

  /** After a change to the held bytes: prefix, waiters, readers, state saving and the hash catch-up. */
  private advance(changed: boolean, fresh?: FreshBytes): void {
    while (this.prefixPieces < this.pieceCount && this.pieces.has(this.prefixPieces)) this.prefixPieces++;
    if (changed) this.saver?.request();
    this.waiters.wakeHeld((index) => this.pieces.has(index));
    this.notify(fresh);
    this.queueCatchUp();
  }

  /**
   * Queues the hash catch-up if the prefix got ahead of the digest. Not before the hasher is ready: on the
   * queue, a catch-up waiting for the hash thread to start would hold up every write behind it.
   */
  private queueCatchUp(): void {
    if (this.hashedEnd >= this.appendOffset || this.catchUpQueued || this.current !== "open") return;
    this.catchUpQueued = true;
    if (!this.hasher.ready) {
      void this.hasher.whenReady().then(() => {
        this.catchUpQueued = false;
        this.queueCatchUp();
      });
      return;
    }
    // Errors fail the partial inside catchUp (readers and the next caller see them); nothing to add here.
    this.enqueue(() => this.catchUp()).catch((error: unknown) => {
      this.logger?.debug({ err: error, digest: this.digest }, "hash catch-up stopped");
    });
  }

  /** Hashes, from storage, the bytes between the hashed prefix and appendOffset. */
  private async catchUp(): Promise<void> {
    this.catchUpQueued = false;
    while (this.current === "open" && this.hashedEnd < this.appendOffset) {
      const length = Math.min(HASH_CHUNK_BYTES, this.appendOffset - this.hashedEnd);
      this.scratch ??= Buffer.allocUnsafeSlow(HASH_CHUNK_BYTES);
      const bytes = this.scratch.subarray(0, length);
      try {
        await this.backend.readInto(bytes, this.hashedEnd);
      } catch (error: unknown) {
        throw await this.fail(error, `reading back ${this.digest} at ${this.hashedEnd}`);
      }
      try {
        await this.hasher.update(this.hashedEnd, bytes, { blob: true, pieces: false });
      } catch (error: unknown) {
        throw await this.fail(error, `hashing ${this.digest} at ${this.hashedEnd}`);
      }
      this.hashedEnd += length;
    }
  }

  /**
   * Every piece's hash for publication (runs on the queue, after the digest matched): pieces that came in
   * without one (resumed from disk) are hashed from storage now. Undefined when this blob's piece size is
   * not the standard one, whose hashes are what the store keeps.
   */
  private async completePieceHashes(): Promise<PublishedPieceHashes | undefined> {
    if (this.pieceSize !== choosePieceSize(this.size)) return undefined;
    for (let index = 0; index < this.pieceCount; index++) {
      if (this.pieceHashes[index] !== undefined) continue;
      const { start, end } = this.span(index);
      const hash = createHash("sha256");
      for (let position = start; position < end;) {
        const length = Math.min(HASH_CHUNK_BYTES, end - position);
        this.scratch ??= Buffer.allocUnsafeSlow(HASH_CHUNK_BYTES);
        const bytes = this.scratch.subarray(0, length);
        await this.backend.readInto(bytes, position);
        hash.update(bytes);
        position += length;
      }
      this.pieceHashes[index] = hash.digest();
    }
    this.scratch = undefined;
    return { pieceSize: this.pieceSize, packed: packPieceHashes(this.pieceHashes as Uint8Array[]) };
  }

  private notify(fresh?: FreshBytes): void {
    for (const listener of [...this.listeners]) listener(fresh);
  }

  private markAborted(reason: Error): void {
    this.current = "aborted";
    this.reason = reason;
    this.waiters.rejectAll(reason);
    this.notify();
  }

  /** Keeps or discards the data of an aborted partial, once. Never waits for the queue (it may run inside it). */
  private settle(keep: boolean): Promise<void> {
    this.scratch = undefined;
    this.hasher.close();
    this.settlement ??= (async () => {
      await this.saver?.stop();
      let kept: PartialSnapshot | undefined = keep ? this.snapshot() : undefined;
      try {
        if (kept !== undefined) await this.backend.keep(kept);
        else await this.backend.discard();
      } catch (error: unknown) {
        this.logger?.warn({ err: error, digest: this.digest }, kept === undefined ? "discarding partial failed" : "keeping partial failed");
        kept = undefined;
      }
      this.hooks.aborted(kept);
      this.settledSignal.resolve(undefined);
      this.maybeCloseBackend();
    })();
    return this.settlement;
  }

  private snapshot(): PartialSnapshot {
    return { bitmap: this.pieces.toBytes(), appendOffset: this.appendOffset };
  }

  private maybeCloseBackend(): void {
    if (this.settlement === undefined || this.readers > 0 || !this.backendOpen) return;
    this.backendOpen = false;
    this.backend.close().catch((error: unknown) => {
      this.logger?.warn({ err: error, digest: this.digest }, "closing partial storage failed");
    });
  }
}
