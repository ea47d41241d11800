import { randomBytes } from "node:crypto";
import type { Logger } from "pino";
import type { ContainerdClient } from "./containerd-client.js";
import { ContainerdError } from "./errors.js";

/** Every lease the agent creates carries this label, so a later agent process can find and delete leftovers. */
export const READER_LEASE_LABEL = "shoal.dev/reader";
/** containerd drops a lease whose expiry has passed at its next garbage collection. */
export const GC_EXPIRE_LABEL = "containerd.io/gc.expire";
/**
 * A lease's expiry: if the agent dies holding one, containerd may collect the blob after this long. It is
 * renewed while readers still hold it, so it bounds nothing but a dead agent's leftovers.
 */
export const LEASE_EXPIRE_MS = 60 * 60 * 1000;
export const LEASE_RENEW_MS = 30 * 60 * 1000;
/**
 * A lease outlives its last reader by this long. A swarm reads a blob in a stream of short calls; without
 * it each call would create and delete a lease (four calls to containerd, each a metadata write).
 */
export const LEASE_LINGER_MS = 2_000;

export type LeaseClient = Pick<ContainerdClient, "createLease" | "addLeaseResource" | "deleteLease">;

export interface LeaseKeeperOptions {
  readonly client: LeaseClient;
  readonly logger?: Logger | undefined;
  readonly expireMs?: number | undefined;
  readonly renewMs?: number | undefined;
  readonly lingerMs?: number | undefined;
  /** Called after a lease is deleted (garbage collection may now remove the blob). */
  readonly onReleased?: (() => void) | undefined;
  readonly now?: (() => number) | undefined;
}

interface HeldLease {
  id: string;
  refs: number;
  readonly ready: Promise<void>;
  renewTimer: NodeJS.Timeout | undefined;
  lingerTimer: NodeJS.Timeout | undefined;
}

/** A held lease: `fresh` when this call created it (the blob was not protected before). */
export interface LeaseHold {
  readonly release: () => void;
  readonly fresh: boolean;
}

/**
 * containerd leases that keep blobs from garbage collection while the agent reads them: one lease per blob
 * being read, shared by its readers, deleted LEASE_LINGER_MS after the last reader is done. So garbage
 * collection is never held up for longer than the transfers in progress (and that linger).
 */
export class LeaseKeeper {
  private readonly held = new Map<string, HeldLease>();
  private readonly prefix = `shoal-${randomBytes(4).toString("hex")}`;
  private sequence = 0;
  private readonly expireMs: number;
  private readonly renewMs: number;
  private readonly lingerMs: number;

  constructor(private readonly options: LeaseKeeperOptions) {
    this.expireMs = options.expireMs ?? LEASE_EXPIRE_MS;
    this.renewMs = options.renewMs ?? LEASE_RENEW_MS;
    this.lingerMs = options.lingerMs ?? LEASE_LINGER_MS;
  }

  /** Leases held now (tests, metrics). */
  get size(): number {
    return this.held.size;
  }

  /**
   * Holds `digest` under a lease until the returned function is called. Throws a ContainerdError when
   * containerd cannot create it (the blob is then not read).
   */
  async hold(digest: string, signal?: AbortSignal): Promise<LeaseHold> {
    let lease = this.held.get(digest);
    const fresh = lease === undefined;
    if (lease === undefined) {
      const id = this.nextId();
      const created: HeldLease = { id, refs: 0, ready: this.create(id, digest), renewTimer: undefined, lingerTimer: undefined };
      lease = created;
      this.held.set(digest, created);
      created.ready.then(
        () => {
          this.scheduleRenewal(digest, created);
        },
        () => {
          if (this.held.get(digest) === created) this.held.delete(digest);
        },
      );
    }
    lease.refs++;
    clearTimeout(lease.lingerTimer);
    lease.lingerTimer = undefined;
    const current = lease;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.release(digest, current);
    };
    try {
      await raceSignal(current.ready, signal);
    } catch (error: unknown) {
      release();
      throw error;
    }
    return { release, fresh };
  }

  /** Deletes every lease still held (shutdown). */
  async releaseAll(): Promise<void> {
    const leases = [...this.held.values()];
    this.held.clear();
    await Promise.allSettled(
      leases.map(async (lease) => {
        clearTimeout(lease.renewTimer);
        clearTimeout(lease.lingerTimer);
        await lease.ready.catch(() => undefined);
        await this.options.client.deleteLease(lease.id).catch(() => undefined);
      }),
    );
  }

  private nextId(): string {
    return `${this.prefix}-${(this.sequence++).toString(36)}`;
  }

  private labels(): Record<string, string> {
    const now = this.options.now?.() ?? Date.now();
    return { [READER_LEASE_LABEL]: "true", [GC_EXPIRE_LABEL]: new Date(now + this.expireMs).toISOString() };
  }

  private async create(id: string, digest: string): Promise<void> {
    const { client } = this.options;
    await client.createLease(id, this.labels());
    try {
      await client.addLeaseResource(id, digest);
    } catch (error: unknown) {
      await client.deleteLease(id).catch(() => undefined);
      throw error;
    }
  }

  private release(digest: string, lease: HeldLease): void {
    lease.refs--;
    if (lease.refs > 0 || this.held.get(digest) !== lease) return;
    if (this.lingerMs <= 0) {
      this.drop(digest, lease);
      return;
    }
    lease.lingerTimer = setTimeout(() => {
      lease.lingerTimer = undefined;
      if (lease.refs === 0 && this.held.get(digest) === lease) this.drop(digest, lease);
    }, this.lingerMs);
    lease.lingerTimer.unref();
  }

  private drop(digest: string, lease: HeldLease): void {
    this.held.delete(digest);
    clearTimeout(lease.renewTimer);
    void lease.ready
      .then(() => this.options.client.deleteLease(lease.id))
      .then(
        () => this.options.onReleased?.(),
        (error: unknown) => {
          // Not fatal: the lease expires by itself (GC_EXPIRE_LABEL), and the next agent start deletes it.
          this.options.logger?.debug({ err: error, lease: lease.id, digest }, "could not delete a containerd lease");
        },
      );
  }

  /** A blob read for longer than the renewal interval gets a fresh lease before the old one expires. */
  private scheduleRenewal(digest: string, lease: HeldLease): void {
    lease.renewTimer = setTimeout(() => {
      if (this.held.get(digest) !== lease) return;
      const id = this.nextId();
      this.create(id, digest).then(
        () => {
          const old = lease.id;
          lease.id = id;
          if (this.held.get(digest) !== lease) {
            void this.options.client.deleteLease(id).catch(() => undefined);
            return;
          }
          void this.options.client.deleteLease(old).catch(() => undefined);
          this.scheduleRenewal(digest, lease);
        },
        (error: unknown) => {
          this.options.logger?.warn({ err: error, digest }, "could not renew a containerd lease; retrying");
          if (this.held.get(digest) === lease) this.scheduleRenewal(digest, lease);
        },
      );
    }, this.renewMs);
    lease.renewTimer.unref();
  }
}

function raceSignal(promise: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) return promise;
  if (signal.aborted) return Promise.reject(new ContainerdError("ERR_CONTAINERD_ABORTED", "aborted", { cause: signal.reason }));
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      reject(new ContainerdError("ERR_CONTAINERD_ABORTED", "aborted", { cause: signal.reason }));
    };
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}
