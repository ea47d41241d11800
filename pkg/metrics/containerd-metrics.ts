import { Counter, Gauge, type Registry } from "prom-client";

/** What the gauges read at scrape time: the containerd content the agent serves from. */
export interface ContainerdUsageSnapshot {
  /** Blobs and bytes in containerd's content store (the agent's namespace). */
  readonly blobs: number;
  readonly bytes: number;
  /** Of those, announced to the tracker (piece hashes at hand) and not also in the agent's own store. */
  readonly advertisedBlobs: number;
  /** Waiting for their piece hashes. */
  readonly hashingBlobs: number;
}

/**
 * The agent's use of containerd's content store as a blob source. The store metrics (shoal_store_*) count
 * only what the agent stores itself; these count what it serves without a copy of its own.
 */
export class ContainerdMetrics {
  readonly connected: Gauge;
  readonly servedBytes: Counter;
  readonly ownCopiesDropped: Counter;
  readonly ownBytesDropped: Counter;
  private usage: (() => ContainerdUsageSnapshot | undefined) | undefined;

  constructor(registry: Registry) {
    const read = (): ContainerdUsageSnapshot | undefined => this.usage?.();
    this.connected = new Gauge({
      name: "shoal_containerd_connected",
      help: "1 while the agent reads containerd's content store over its socket (0 when off, missing or away).",
      registers: [registry],
    });
    this.servedBytes = new Counter({
      name: "shoal_containerd_served_bytes_total",
      help: "Bytes read from containerd's content store for clients of the mirror and for other agents (blobs served without a copy in the agent's store).",
      registers: [registry],
    });
    this.ownCopiesDropped = new Counter({
      name: "shoal_containerd_own_copies_dropped_total",
      help: "Blobs the agent deleted from its own store because containerd had committed them (one copy per node).",
      registers: [registry],
    });
    this.ownBytesDropped = new Counter({
      name: "shoal_containerd_own_copies_dropped_bytes_total",
      help: "Bytes of the blobs counted by shoal_containerd_own_copies_dropped_total.",
      registers: [registry],
    });
    new Gauge({
      name: "shoal_containerd_content_bytes",
      help: "Bytes of blobs in containerd's content store (the agent's namespace) that the agent serves from.",
      registers: [registry],
      collect() {
        this.set(read()?.bytes ?? 0);
      },
    });
    new Gauge({
      name: "shoal_containerd_content_blobs",
      help: "Blobs in containerd's content store the agent serves from, by state: announced to the tracker, or hashing (piece hashes not computed yet).",
      labelNames: ["state"] as const,
      registers: [registry],
      collect() {
        const usage = read();
        this.set({ state: "announced" }, usage?.advertisedBlobs ?? 0);
        this.set({ state: "hashing" }, usage?.hashingBlobs ?? 0);
      },
    });
  }

  /** Binds the content gauges to a live source; read at scrape time. */
  bindUsage(read: () => ContainerdUsageSnapshot | undefined): void {
    this.usage = read;
  }
}
