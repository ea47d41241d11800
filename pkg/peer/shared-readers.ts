import type { Digest } from "../oci/index.js";
import type { BlobReader, BlobStore } from "../store/index.js";

/** A use of a shared reader; close() ends this use (the reader closes with its last one). */
export interface ReaderLease {
  readonly reader: BlobReader;
  close(): Promise<void>;
}

interface Entry {
  readonly opening: Promise<BlobReader>;
  users: number;
}

/**
 * Readers of complete blobs shared by the reads of one Exchange stream that are open at the same time. A
 * client keeps a few reads of a blob in flight, so a stream would otherwise open and close the blob's
 * file for every two pieces; with the reader shared it stays open while reads of it are (and pinned in
 * the store, as each read's own reader would pin it), and closes when the last one ends.
 */
export class SharedReaders {
  private readonly open = new Map<Digest, Entry>();

  constructor(
    private readonly store: BlobStore,
    /** The stream's signal: a reader is not opened for one read (whose own cancel would fail the others). */
    private readonly signal: AbortSignal,
  ) {}

  async acquire(digest: Digest): Promise<ReaderLease> {
    let entry = this.open.get(digest);
    if (entry === undefined) {
      entry = { opening: this.store.openReader(digest, this.signal), users: 0 };
      this.open.set(digest, entry);
    }
    const used = entry;
    used.users++;
    let reader: BlobReader;
    try {
      reader = await used.opening;
    } catch (error: unknown) {
      used.users--;
      // The next read tries again.
      if (this.open.get(digest) === used) this.open.delete(digest);
      throw error;
    }
    let closed = false;
    return {
      reader,
      close: async () => {
        if (closed) return;
        closed = true;
        used.users--;
        if (used.users > 0) return;
        if (this.open.get(digest) === used) this.open.delete(digest);
        await reader.close();
      },
    };
  }
}
