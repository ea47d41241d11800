import type { Logger } from "pino";
import { type Digest, isDigest } from "../oci/index.js";
import { type BlobReader, type ExternalBlob, type ExternalBlobSource, type ExternalSourceEvent, StoreError } from "../store/index.js";
import { ContainerdClient } from "./containerd-client.js";
import { apiReader, fileReader } from "./content-readers.js";
import { isContainerdError } from "./errors.js";
import { type LeaseHold, LeaseKeeper, READER_LEASE_LABEL } from "./lease-keeper.js";

/** A full listing this often besides the event-driven ones (a missed event costs at most this much staleness). */
export const RECONCILE_INTERVAL_MS = 30_000;
/** Events come in bursts (a pull creates several images and snapshots): one listing per burst. */
const RECONCILE_DEBOUNCE_MS = 100;
/** containerd collects garbage after deletions, asynchronously: look again after these delays. */
const GC_FOLLOW_UP_MS = [1_000, 5_000] as const;
/** While containerd is away, its blobs stay announced this long (a restart takes seconds), then are withdrawn. */
export const DISCONNECT_GRACE_MS = 15_000;
const RECONNECT_INITIAL_MS = 1_000;
const RECONNECT_MAX_MS = 30_000;
/** start() waits this long for the first listing, so the agent's first announcement includes containerd's blobs. */
const FIRST_LISTING_WAIT_MS = 5_000;

export interface ContainerdContentSourceOptions {
  /** containerd's gRPC socket, e.g. /run/containerd/containerd.sock. */
  readonly socket: string;
  /** The namespace whose content is shared: k8s.io for the kubelet's images. */
  readonly namespace: string;
  /** containerd's content directory (`<root>/io.containerd.content.v1.content`), mounted read-only: reads skip the API. */
  readonly contentDir?: string | undefined;
  readonly logger: Logger;
  readonly reconcileIntervalMs?: number | undefined;
  readonly disconnectGraceMs?: number | undefined;
  readonly onConnectionChange?: ((connected: boolean) => void) | undefined;
}

/**
 * containerd's content store as an ExternalBlobSource: a snapshot of the namespace's committed blobs, kept
 * current by a listing at connect, on image and content events, after garbage collection may have run, and
 * every 30 s. Readers hold a containerd lease on their blob (LeaseKeeper) and read from the content
 * directory when it is mounted, else through the API.
 *
 * It never stops the agent: a missing or refusing socket is logged once in words, the snapshot stays empty
 * (the agent serves from its own store), and the source keeps trying with backoff. When containerd goes
 * away its blobs stay announced for DISCONNECT_GRACE_MS, then are withdrawn until it is back.
 */
export class ContainerdContentSource implements ExternalBlobSource {
  readonly name = "containerd";
  private readonly client: ContainerdClient;
  private readonly leases: LeaseKeeper;
  private readonly logger: Logger;
  private readonly snapshot = new Map<Digest, ExternalBlob>();
  private readonly listeners = new Set<(event: ExternalSourceEvent) => void>();
  private readonly closer = new AbortController();
  private connected = false;
  private everConnected = false;
  private lastProblem: string | undefined;
  private graceTimer: NodeJS.Timeout | undefined;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private reconcileDueMs = Number.POSITIVE_INFINITY;
  private reconciling: Promise<void> | undefined;
  private reconcileAgain = false;
  /** One pending follow-up listing per delay of GC_FOLLOW_UP_MS: a stream of lease releases costs a listing per slot. */
  private readonly followUps: (NodeJS.Timeout | undefined)[] = GC_FOLLOW_UP_MS.map(() => undefined);
  private running: Promise<void> | undefined;
  private firstAttempt: (() => void) | undefined;

  private constructor(private readonly options: ContainerdContentSourceOptions) {
    this.logger = options.logger;
    this.client = new ContainerdClient({ socket: options.socket, namespace: options.namespace });
    this.leases = new LeaseKeeper({
      client: this.client,
      logger: options.logger,
      // Our lease was what kept a removed image's blobs: garbage collection may take them now.
      onReleased: () => {
        this.followUpAfterGc();
      },
    });
  }

  /** Starts connecting; resolves after the first attempt (connected and listed, or failed), at most a few seconds. */
  static async start(options: ContainerdContentSourceOptions): Promise<ContainerdContentSource> {
    const source = new ContainerdContentSource(options);
    const attempted = new Promise<void>((resolve) => {
      source.firstAttempt = resolve;
    });
    source.running = source.run();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([attempted, new Promise<void>((resolve) => (timer = setTimeout(resolve, FIRST_LISTING_WAIT_MS)))]);
    clearTimeout(timer);
    return source;
  }

  /** A method, not a property: it changes across awaits, which property narrowing would hide. */
  private isClosed(): boolean {
    return this.closer.signal.aborted;
  }

  private askedAgain(): boolean {
    return this.reconcileAgain;
  }

  get isConnected(): boolean {
    return this.connected;
  }

  get(digest: Digest): ExternalBlob | undefined {
    return this.snapshot.get(digest);
  }

  list(): ExternalBlob[] {
    return [...this.snapshot.values()];
  }

  subscribe(listener: (event: ExternalSourceEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async openReader(digest: Digest, signal?: AbortSignal): Promise<BlobReader> {
    const blob = this.snapshot.get(digest);
    if (blob === undefined || !this.connected || this.isClosed()) throw notFound(digest, "containerd does not hold it now");
    let lease: LeaseHold;
    try {
      lease = await this.leases.hold(digest, signal);
    } catch (error: unknown) {
      throw toStoreError(digest, error, signal);
    }
    const { release } = lease;
    try {
      let size = blob.size;
      // A lease already held was checked when it was made, and has protected the blob since.
      if (lease.fresh) {
        const info = await this.client.info(digest, signal);
        if (info === undefined) {
          // Collected since the last listing: withdraw it now rather than at the next one.
          this.applyListing(new Map([...this.snapshot].filter(([held]) => held !== digest)));
          throw notFound(digest, "containerd no longer holds it");
        }
        size = info.size;
      }
      const file = this.options.contentDir === undefined ? undefined : await fileReader(this.options.contentDir, digest, size, this.logger);
      const reader = file ?? apiReader(this.client, digest, size);
      let released = false;
      return {
        size: reader.size,
        read: (target, position) => reader.read(target, position),
        close: async () => {
          try {
            await reader.close();
          } finally {
            if (!released) release();
            released = true;
          }
        },
      };
    } catch (error: unknown) {
      release();
      throw toStoreError(digest, error, signal);
    }
  }

  async close(): Promise<void> {
    this.closer.abort();
    clearTimeout(this.graceTimer);
    clearTimeout(this.reconcileTimer);
    for (const timer of this.followUps) clearTimeout(timer);
    this.followUps.fill(undefined);
    await this.running;
    await this.reconciling?.catch(() => undefined);
    await this.leases.releaseAll();
    this.client.close();
  }

  /** Connect, list, follow events; on any failure wait (backoff) and start over, until closed. */
  private async run(): Promise<void> {
    let backoffMs = RECONNECT_INITIAL_MS;
    while (!this.isClosed()) {
      const problem = await this.client.checkSocket();
      if (problem !== undefined) {
        this.down(problem);
      } else {
        const session = new AbortController();
        const stop = (): void => {
          session.abort();
        };
        this.closer.signal.addEventListener("abort", stop, { once: true });
        try {
          const filters = [`namespace==${JSON.stringify(this.options.namespace)},topic~="^/(images|content)/"`];
          const events = this.client.subscribe(
            filters,
            (envelope) => {
              if (envelope.namespace !== this.options.namespace) return;
              this.scheduleReconcile(RECONCILE_DEBOUNCE_MS);
              if (envelope.topic.endsWith("/delete")) this.followUpAfterGc();
            },
            session.signal,
          );
          // Awaited below once listed; a failed listing abandons it (the session abort ends it).
          events.catch(() => undefined);
          await this.reconcile();
          if (!this.everConnected) await this.deleteLeftoverLeases();
          this.up();
          backoffMs = RECONNECT_INITIAL_MS;
          await events;
          if (!this.isClosed()) this.down("containerd ended the event stream (stopped or restarted)");
        } catch (error: unknown) {
          if (!this.isClosed()) this.down(error instanceof Error ? error.message : String(error));
        } finally {
          session.abort();
          this.closer.signal.removeEventListener("abort", stop);
        }
      }
      this.firstAttempt?.();
      this.firstAttempt = undefined;
      if (this.isClosed()) return;
      await sleep(backoffMs, this.closer.signal);
      backoffMs = Math.min(backoffMs * 2, RECONNECT_MAX_MS);
    }
  }

  private up(): void {
    clearTimeout(this.graceTimer);
    this.graceTimer = undefined;
    if (!this.connected) {
      this.connected = true;
      const bytes = this.list().reduce((sum, blob) => sum + blob.size, 0);
      this.logger.info(
        {
          socket: this.options.socket,
          namespace: this.options.namespace,
          contentDir: this.options.contentDir,
          blobs: this.snapshot.size,
          bytes,
        },
        "containerd content store connected: its blobs are served and announced",
      );
      this.options.onConnectionChange?.(true);
    }
    this.everConnected = true;
    this.lastProblem = undefined;
    this.scheduleReconcile(this.options.reconcileIntervalMs ?? RECONCILE_INTERVAL_MS);
  }

  private down(problem: string): void {
    clearTimeout(this.reconcileTimer);
    this.reconcileDueMs = Number.POSITIVE_INFINITY;
    if (this.connected) {
      this.connected = false;
      this.options.onConnectionChange?.(false);
      const graceMs = this.options.disconnectGraceMs ?? DISCONNECT_GRACE_MS;
      this.logger.warn(
        { socket: this.options.socket, problem, blobs: this.snapshot.size, graceMs },
        "lost containerd: its blobs stay announced for a while, then are withdrawn until it is back",
      );
      this.graceTimer = setTimeout(() => {
        this.graceTimer = undefined;
        if (!this.connected) this.applyListing(new Map());
      }, graceMs);
      this.graceTimer.unref();
    } else if (problem !== this.lastProblem) {
      const level = this.everConnected ? "debug" : "warn";
      this.logger[level](
        { socket: this.options.socket, namespace: this.options.namespace, problem },
        "containerd content store unavailable: blobs are served from the agent's own store only (retrying; on nodes without containerd set --containerd-content=false)",
      );
    }
    this.lastProblem = problem;
  }

  /** A listing `delayMs` from now, unless one is due sooner. */
  private scheduleReconcile(delayMs: number): void {
    const due = Date.now() + delayMs;
    if (due >= this.reconcileDueMs || this.isClosed()) return;
    clearTimeout(this.reconcileTimer);
    this.reconcileDueMs = due;
    this.reconcileTimer = setTimeout(() => {
      this.reconcileDueMs = Number.POSITIVE_INFINITY;
      this.reconcile().then(
        () => {
          if (this.connected) this.scheduleReconcile(this.options.reconcileIntervalMs ?? RECONCILE_INTERVAL_MS);
        },
        (error: unknown) => {
          this.logger.debug({ err: error }, "listing containerd's content failed");
          if (this.connected) this.scheduleReconcile(RECONNECT_INITIAL_MS);
        },
      );
    }, delayMs);
    this.reconcileTimer.unref();
  }

  private followUpAfterGc(): void {
    if (this.isClosed()) return;
    GC_FOLLOW_UP_MS.forEach((delayMs, slot) => {
      if (this.followUps[slot] !== undefined) return;
      const timer = setTimeout(() => {
        this.followUps[slot] = undefined;
        if (this.connected) this.scheduleReconcile(0);
      }, delayMs);
      timer.unref();
      this.followUps[slot] = timer;
    });
  }

  /** Lists the namespace's content and applies the difference; one listing at a time, again if asked meanwhile. */
  private reconcile(): Promise<void> {
    if (this.reconciling !== undefined) {
      this.reconcileAgain = true;
      return this.reconciling;
    }
    this.reconciling = (async () => {
      try {
        do {
          this.reconcileAgain = false;
          const listed = await this.client.list(this.closer.signal);
          const held = new Map<Digest, ExternalBlob>();
          for (const info of listed)
            if (isDigest(info.digest) && Number.isSafeInteger(info.size) && info.size >= 0)
              held.set(info.digest, { digest: info.digest, size: info.size });
          this.applyListing(held);
        } while (this.askedAgain() && !this.isClosed());
      } finally {
        this.reconciling = undefined;
      }
    })();
    return this.reconciling;
  }

  private applyListing(held: ReadonlyMap<Digest, ExternalBlob>): void {
    const removed = [...this.snapshot.keys()].filter((digest) => !held.has(digest));
    const added = [...held.values()].filter((blob) => !this.snapshot.has(blob.digest));
    for (const digest of removed) this.snapshot.delete(digest);
    for (const blob of added) this.snapshot.set(blob.digest, blob);
    if (removed.length > 0) this.emit({ type: "removed", digests: removed });
    if (added.length > 0) this.emit({ type: "added", blobs: added });
    if (removed.length + added.length > 0)
      this.logger.debug({ added: added.length, removed: removed.length, held: this.snapshot.size }, "containerd content changed");
  }

  /** Leases an earlier agent process held when it died (they would otherwise keep blobs until they expire). */
  private async deleteLeftoverLeases(): Promise<void> {
    try {
      const leftovers = await this.client.listLeases(`labels.${JSON.stringify(READER_LEASE_LABEL)}`, this.closer.signal);
      for (const id of leftovers) await this.client.deleteLease(id, this.closer.signal);
      if (leftovers.length > 0)
        this.logger.info({ leases: leftovers.length }, "deleted containerd leases left by an earlier agent process");
    } catch (error: unknown) {
      this.logger.warn({ err: error }, "could not delete leftover containerd leases; they expire by themselves");
    }
  }

  private emit(event: ExternalSourceEvent): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (error: unknown) {
        this.logger.error({ err: error }, "containerd content listener threw");
      }
    }
  }
}

function notFound(digest: Digest, why: string): StoreError {
  return new StoreError("ERR_STORE_BLOB_NOT_FOUND", `blob ${digest} not found: ${why}`);
}

/** containerd being away or not holding the blob is "not found here" for the caller, who looks elsewhere. */
function toStoreError(digest: Digest, error: unknown, signal: AbortSignal | undefined): StoreError {
  if (error instanceof StoreError) return error;
  if (signal?.aborted === true || isContainerdError(error, "ERR_CONTAINERD_ABORTED"))
    return new StoreError("ERR_STORE_ABORTED", `reading ${digest} was aborted`, { cause: error });
  if (
    isContainerdError(error, "ERR_CONTAINERD_NOT_FOUND") ||
    isContainerdError(error, "ERR_CONTAINERD_UNAVAILABLE") ||
    isContainerdError(error, "ERR_CONTAINERD_CLOSED")
  ) {
    return new StoreError("ERR_STORE_BLOB_NOT_FOUND", `blob ${digest} not readable from containerd now`, { cause: error });
  }
  return new StoreError("ERR_STORE_IO", `reading ${digest} from containerd failed`, { cause: error });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
