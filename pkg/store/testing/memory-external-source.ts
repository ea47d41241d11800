import { type Digest, digestOf } from "../../oci/index.js";
import type { BlobReader } from "../blob-store.js";
import { StoreError } from "../errors.js";
import type { ExternalBlob, ExternalBlobSource, ExternalSourceEvent } from "../external-source.js";

/**
 * An ExternalBlobSource in memory, driven by the test: `add` and `remove` change what it holds and tell
 * subscribers. A reader opened before `remove` keeps reading (as a containerd lease keeps a blob), and the
 * source counts readers and bytes read so tests can tell whether a blob was read at all.
 */
export class MemoryExternalSource implements ExternalBlobSource {
  readonly name = "memory";
  private readonly blobs = new Map<Digest, Uint8Array>();
  private readonly listeners = new Set<(event: ExternalSourceEvent) => void>();
  /** Readers opened, per digest. */
  readonly opened = new Map<Digest, number>();
  openReaders = 0;
  bytesRead = 0;
  closed = false;

  add(...contents: Uint8Array[]): ExternalBlob[] {
    const added = contents.map((data) => {
      const digest = digestOf(data);
      this.blobs.set(digest, data);
      return { digest, size: data.byteLength };
    });
    this.emit({ type: "added", blobs: added });
    return added;
  }

  remove(...digests: Digest[]): void {
    for (const digest of digests) this.blobs.delete(digest);
    this.emit({ type: "removed", digests });
  }

  get(digest: Digest): ExternalBlob | undefined {
    const data = this.blobs.get(digest);
    return data === undefined ? undefined : { digest, size: data.byteLength };
  }

  list(): ExternalBlob[] {
    return [...this.blobs].map(([digest, data]) => ({ digest, size: data.byteLength }));
  }

  subscribe(listener: (event: ExternalSourceEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  openReader(digest: Digest, signal?: AbortSignal): Promise<BlobReader> {
    if (signal?.aborted === true) return Promise.reject(new StoreError("ERR_STORE_ABORTED", "aborted"));
    const data = this.blobs.get(digest);
    if (data === undefined || this.closed) return Promise.reject(new StoreError("ERR_STORE_BLOB_NOT_FOUND", `blob ${digest} not found`));
    this.opened.set(digest, (this.opened.get(digest) ?? 0) + 1);
    this.openReaders++;
    let open = true;
    return Promise.resolve({
      size: data.byteLength,
      read: (target: Uint8Array, position: number) => {
        if (!open || position < 0 || position + target.byteLength > data.byteLength) {
          return Promise.reject(new StoreError("ERR_STORE_INVALID_ARGUMENT", `bad read of ${digest}`));
        }
        target.set(data.subarray(position, position + target.byteLength));
        this.bytesRead += target.byteLength;
        return Promise.resolve();
      },
      close: () => {
        if (open) this.openReaders--;
        open = false;
        return Promise.resolve();
      },
    });
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  private emit(event: ExternalSourceEvent): void {
    for (const listener of [...this.listeners]) listener(event);
  }
}
