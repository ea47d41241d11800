import { Worker } from "node:worker_threads";
import { SequentialPieceHasher } from "../piece/index.js";
import type { ContentHasher, ContentHasherParams, HashedPiece, HashTargets } from "./content-hasher.js";
import { StoreError } from "./errors.js";

/** Bytes a worker hasher copies at a time into its staging memory, for bytes not in shared memory already. */
export const HASH_STAGING_BYTES = 2 * 1024 * 1024;
/**
 * How long the hash worker thread stays after its last hasher closed. A thread costs ~12 MB of RSS, and
 * an agent is idle most of the time; the next large pull starts a new one: 36–79 ms on an idle machine,
 * but about 0.5 s when every process on 2 cores starts pulling at once (the demo's round), and until it
 * answers the first origin transfer's pieces are not held. Starting it with the agent was measured and not
 * kept (docs/benchmarks.md, "December 5 (sixth session)").
 */
export const HASH_WORKER_IDLE_MS = 30_000;

/** Messages to the hash worker (hash-worker.ts). */
export type HashWorkerRequest =
  | { readonly op: "open"; readonly id: number; readonly params: ContentHasherParams }
  | {
      readonly op: "update";
      readonly id: number;
      readonly seq: number;
      readonly position: number;
      /** The bytes are memory[offset, offset + length): shared, not copied. */
      readonly memory: SharedArrayBuffer;
      readonly offset: number;
      readonly length: number;
      readonly targets: HashTargets;
    }
  | { readonly op: "digest"; readonly id: number; readonly seq: number }
  | { readonly op: "close"; readonly id: number };

/** The hash worker's answer to an update or digest request. */
export type HashWorkerReply =
  | { readonly seq: number; readonly pieces: readonly HashedPiece[] }
  | { readonly seq: number; readonly digest: string }
  | { readonly seq: number; readonly error: string };

const WORKER_URL = new URL("./hash-worker.js", import.meta.url);
const BLOB_ONLY: HashTargets = { blob: true, pieces: false };

interface Pending {
  resolve(reply: HashWorkerReply): void;
  reject(error: Error): void;
}

/**
 * The one hash worker thread of the process, shared by every partial that hashes off the event loop. Started
 * on first use; it keeps the process alive only while a request is pending. If it dies, pending requests
 * fail, hash states of that worker are lost (their partials fail on their next call) and the next open
 * starts a new one.
 */
class HashWorkerChannel {
  private worker: Worker | undefined;
  /** Bumped whenever a worker is lost: hashers opened on an earlier one have lost their state. */
  private generation = 0;
  private nextId = 1;
  private nextSeq = 1;
  private readonly pending = new Map<number, Pending>();
  /** Hashers opened and not yet closed (over every generation). */
  private openHashers = 0;
  /** The current worker runs its code (its 'online' event came). */
  online = false;
  /** Settled when the current worker is online or lost. */
  private started_ = Promise.withResolvers<undefined>();
  /**
   * Tests: a thread started while this is set starts only at releaseStart(), as a slow start-up would
   * have it: it is not online, and what is sent to it waits.
   */
  holdStart = false;
  private heldStart: (() => void) | undefined;
  private heldMessages: HashWorkerRequest[] | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  idleMs = HASH_WORKER_IDLE_MS;

  open(params: ContentHasherParams): { id: number; generation: number } {
    const id = this.nextId++;
    this.openHashers++;
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.post({ op: "open", id, params });
    return { id, generation: this.generation };
  }

  /** A hasher is done (closed, or its digest taken): the last one out stops the thread after idleMs. */
  released(): void {
    this.openHashers--;
    if (this.openHashers > 0 || this.worker === undefined) return;
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      const worker = this.worker;
      if (this.openHashers > 0 || this.pending.size > 0 || worker === undefined) return;
      // Forgotten first: its exit is then not a loss (nothing of it is in use).
      this.worker = undefined;
      this.generation++;
      void worker.terminate();
    }, this.idleMs);
    this.idleTimer.unref();
  }

  get running(): boolean {
    return this.worker !== undefined;
  }

  /** Tests: the thread dies (as a crash would; its hashers lose their state). */
  kill(): Promise<number> | undefined {
    return this.worker?.terminate();
  }

  /** Tests: a thread held by holdStart counts as started now (at once if it is not online yet: when it is). */
  releaseStart(): void {
    this.holdStart = false;
    const messages = this.heldMessages;
    this.heldMessages = undefined;
    for (const message of messages ?? []) this.worker?.postMessage(message);
    const start = this.heldStart;
    this.heldStart = undefined;
    start?.();
  }

  alive(generation: number): boolean {
    return generation === this.generation && this.worker !== undefined;
  }

  /** Requests of `generation` are answered without waiting for a thread to start (or fail at once: it is gone). */
  readyFor(generation: number): boolean {
    return !this.alive(generation) || this.online;
  }

  /** Settles when the current thread is online or lost. */
  whenStarted(): Promise<void> {
    return this.worker === undefined ? Promise.resolve() : this.started_.promise;
  }

  request(build: (seq: number) => HashWorkerRequest): Promise<HashWorkerReply> {
    const seq = this.nextSeq++;
    const worker = this.started();
    const reply = new Promise<HashWorkerReply>((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
    });
    if (this.pending.size === 1) worker.ref();
    this.send(worker, build(seq));
    return reply;
  }

  post(message: HashWorkerRequest): void {
    this.send(this.started(), message);
  }

  private send(worker: Worker, message: HashWorkerRequest): void {
    if (this.heldMessages !== undefined) this.heldMessages.push(message);
    else worker.postMessage(message);
  }

  private started(): Worker {
    if (this.worker !== undefined) return this.worker;
    // No inherited flags: the thread needs none, and some (an --input-type, say) would stop it loading.
    const worker = new Worker(WORKER_URL, { name: "shoal-hash", execArgv: [] });
    const started = Promise.withResolvers<undefined>();
    this.started_ = started;
    this.online = false;
    this.heldMessages = this.holdStart ? [] : undefined;
    worker.once("online", () => {
      const start = (): void => {
        if (this.worker === worker) this.online = true;
        started.resolve(undefined);
      };
      if (this.holdStart) this.heldStart = start;
      else start();
    });
    worker.on("message", (reply: HashWorkerReply) => {
      const waiter = this.pending.get(reply.seq);
      if (waiter === undefined) return;
      this.pending.delete(reply.seq);
      if (this.pending.size === 0) worker.unref();
      waiter.resolve(reply);
    });
    const lost = (cause: unknown): void => {
      started.resolve(undefined);
      if (this.worker !== worker) return;
      this.heldMessages = undefined;
      this.worker = undefined;
      this.generation++;
      const error = new StoreError("ERR_STORE_IO", "the hash worker thread stopped", { cause });
      for (const waiter of this.pending.values()) waiter.reject(error);
      this.pending.clear();
    };
    worker.on("error", lost);
    worker.on("exit", (code) => {
      lost(new Error(`exit code ${code}`));
    });
    // After the listeners: attaching a 'message' listener refs the worker again.
    worker.unref();
    this.worker = worker;
    return worker;
  }
}

let channel: HashWorkerChannel | undefined;

/** @internal Tests: the process's hash worker thread. */
export interface HashThreadForTests {
  /** A thread exists. */
  readonly running: boolean;
  /** It runs its code. */
  readonly online: boolean;
  /** Threads started while set start only at releaseStart(). */
  holdStart: boolean;
  kill(): Promise<number> | undefined;
  releaseStart(): void;
}

/** @internal Tests: the hash worker thread, and how long it stays idle. */
export function hashWorkerForTests(idleMs?: number): HashThreadForTests {
  channel ??= new HashWorkerChannel();
  if (idleMs !== undefined) channel.idleMs = idleMs;
  return channel;
}

/**
 * Hashes in the process's hash worker thread. The worker reads the bytes from memory it shares with the
 * event loop: bytes already in shared memory (the origin fetcher's write batches) as they are, others after
 * one copy into this hasher's staging memory (stage(); a tenth of the cost of the two SHA-256 passes, and
 * nothing to serialize or collect). The event loop writes them to storage meanwhile and goes on receiving
 * and serving.
 *
 * Until the thread runs (it is started with the first hasher, and stops after HASH_WORKER_IDLE_MS idle),
 * the hasher is not `ready`: piece hashes are taken on the calling thread, so the pieces of a transfer that
 * starts with the thread are held, served and announced at once instead of ~0.5 s later on a busy machine,
 * and the partial leaves the blob digest to its catch-up. The piece in progress when the thread comes up
 * is finished here too; the thread takes over at the next piece boundary.
 */
export class WorkerContentHasher implements ContentHasher {
  private readonly channel: HashWorkerChannel;
  private readonly stagingBytes: number;
  /** Allocated on the first copy: a partial fed only from shared memory never touches it. */
  private staging: Buffer | undefined;
  private readonly id: number;
  private readonly generation: number;
  private closed = false;
  private readonly size: number;
  private readonly pieceSize: number;
  /** Piece hashes taken on this thread while the worker starts, up to the first piece boundary after. */
  private early: SequentialPieceHasher | undefined;
  private earlyPieces: HashedPiece[] = [];

  constructor(params: ContentHasherParams) {
    channel ??= new HashWorkerChannel();
    this.channel = channel;
    this.size = params.size;
    this.pieceSize = params.pieceSize;
    this.stagingBytes = Math.min(HASH_STAGING_BYTES, Math.max(params.size, 1));
    ({ id: this.id, generation: this.generation } = this.channel.open(params));
  }

  stage(bytes: Uint8Array): Uint8Array {
    if (bytes.buffer instanceof SharedArrayBuffer) return bytes;
    this.staging ??= Buffer.from(new SharedArrayBuffer(this.stagingBytes));
    const length = Math.min(bytes.byteLength, this.staging.byteLength);
    this.staging.set(bytes.subarray(0, length));
    return this.staging.subarray(0, length);
  }

  get ready(): boolean {
    return this.channel.readyFor(this.generation);
  }

  whenReady(): Promise<void> {
    return this.channel.whenStarted();
  }

  async update(position: number, bytes: Uint8Array, targets: HashTargets): Promise<readonly HashedPiece[]> {
    const completed: HashedPiece[] = [];
    let done = 0;
    if (targets.pieces && !this.closed && (this.early !== undefined || !this.ready)) {
      done = this.hashEarly(position, bytes);
      completed.push(...this.earlyPieces);
      this.earlyPieces = [];
      // The digest's share of those bytes still goes to the thread (waiting for it to start, if need be).
      if (targets.blob && done > 0) completed.push(...(await this.send(position, bytes.subarray(0, done), BLOB_ONLY)));
    }
    if (done < bytes.byteLength) completed.push(...(await this.send(position + done, bytes.subarray(done), targets)));
    return completed;
  }

  /**
   * Piece hashes on this thread: of all of `bytes` while the worker is not ready, else up to the end of
   * the piece in progress (after which the worker takes them). Returns how many bytes it took.
   */
  private hashEarly(position: number, bytes: Uint8Array): number {
    const ready = this.ready;
    const boundary = Math.min(Math.ceil(position / this.pieceSize) * this.pieceSize, this.size);
    const take = ready ? Math.min(bytes.byteLength, boundary - position) : bytes.byteLength;
    this.early ??= new SequentialPieceHasher(this.size, this.pieceSize, (index, sha256) => {
      this.earlyPieces.push({ index, sha256 });
    });
    if (take > 0) this.early.update(position, bytes.subarray(0, take));
    if (ready && position + take >= boundary) this.early = undefined;
    return take;
  }

  private async send(position: number, bytes: Uint8Array, targets: HashTargets): Promise<readonly HashedPiece[]> {
    const completed: HashedPiece[] = [];
    for (let done = 0; done < bytes.byteLength;) {
      this.checkAlive();
      const staged = this.stage(bytes.subarray(done));
      const memory = staged.buffer as SharedArrayBuffer;
      const reply = await this.channel.request((seq) => ({
        op: "update",
        id: this.id,
        seq,
        position: position + done,
        memory,
        offset: staged.byteOffset,
        length: staged.byteLength,
        targets,
      }));
      if ("error" in reply) throw new StoreError("ERR_STORE_IO", `hashing failed: ${reply.error}`);
      if (!("pieces" in reply)) throw new StoreError("ERR_STORE_IO", "the hash worker answered an update with a digest");
      completed.push(...reply.pieces);
      done += staged.byteLength;
    }
    return completed;
  }
  async digest(): Promise<string> {
    this.checkAlive();
    let reply: HashWorkerReply;
    try {
      reply = await this.channel.request((seq) => ({ op: "digest", id: this.id, seq }));
    } finally {
      this.markClosed();
    }
    if ("error" in reply) throw new StoreError("ERR_STORE_IO", `hashing failed: ${reply.error}`);
    if (!("digest" in reply)) throw new StoreError("ERR_STORE_IO", "the hash worker answered a digest with pieces");
    return reply.digest;
  }

  close(): void {
    if (this.closed) return;
    if (this.channel.alive(this.generation)) this.channel.post({ op: "close", id: this.id });
    this.markClosed();
  }

  private markClosed(): void {
    if (this.closed) return;
    this.closed = true;
    this.channel.released();
  }

  private checkAlive(): void {
    if (this.closed) throw new StoreError("ERR_STORE_INVALID_ARGUMENT", "hasher is closed");
    if (!this.channel.alive(this.generation))
      throw new StoreError("ERR_STORE_IO", "the hash worker thread stopped; this blob's hash state is lost");
  }
}
