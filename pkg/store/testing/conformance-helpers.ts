import assert from "node:assert/strict";
import { once } from "node:events";
import type { Readable } from "node:stream";
import { Writable } from "node:stream";
import { setTimeout as delay } from "node:timers/promises";
import { type DigestAlgorithm, digestOf } from "../../oci/index.js";
import type { BlobInfo, BlobStore, StoreEvent } from "../blob-store.js";
import { isStoreError, type StoreError, type StoreErrorCode } from "../errors.js";

/** Options a conformance factory must honour (quota tests need them). */
export interface ConformanceStoreOptions {
  readonly quotaBytes?: number;
  readonly highWatermark?: number;
  readonly lowWatermark?: number;
  /** LRU clock; tests drive it explicitly. */
  readonly now?: () => number;
}

export type BlobStoreFactory = (options?: ConformanceStoreOptions) => Promise<{ store: BlobStore; cleanup: () => Promise<void> }>;

export const WAIT_TIMEOUT_MS = 5000;
/** Long enough for a reader that wrongly had bytes to deliver them. */
export const SETTLE_MS = 30;

export { delay };

export async function withStore(
  factory: BlobStoreFactory,
  options: ConformanceStoreOptions | undefined,
  body: (store: BlobStore) => Promise<void>,
): Promise<void> {
  const { store, cleanup } = await factory(options);
  try {
    await body(store);
  } finally {
    await cleanup();
  }
}

/** Deterministic pseudo-random bytes (xorshift32), different per seed. */
export function testBytes(length: number, seed = 1): Buffer {
  const bytes = Buffer.alloc(length);
  let state = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    bytes[i] = state & 0xff;
  }
  return bytes;
}

export async function putBlob(
  store: BlobStore,
  data: Uint8Array,
  options: { pieceSize?: number; mediaType?: string; algorithm?: DigestAlgorithm } = {},
): Promise<BlobInfo> {
  const digest = digestOf(data, options.algorithm ?? "sha256");
  const partial = await store.openPartial(digest, data.byteLength, {
    pieceSize: options.pieceSize ?? 64,
    ...(options.mediaType === undefined ? {} : { mediaType: options.mediaType }),
  });
  await partial.append(data);
  return partial.commit();
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Uint8Array));
  // The blob stays pinned until the stream is closed; wait for it so the next step sees it unpinned.
  if (!stream.closed) await once(stream, "close");
  return Buffer.concat(chunks);
}

export async function expectStoreError(promise: Promise<unknown>, code: StoreErrorCode): Promise<StoreError> {
  let caught: unknown;
  await assert.rejects(promise, (error: unknown) => {
    caught = error;
    return true;
  });
  assert.ok(isStoreError(caught, code), `expected ${code}, got ${String(caught)}`);
  return caught;
}

export function expectStoreErrorSync(fn: () => unknown, code: StoreErrorCode): void {
  assert.throws(fn, (error: unknown) => isStoreError(error, code));
}

export function recordEvents(store: BlobStore): StoreEvent[] {
  const events: StoreEvent[] = [];
  store.subscribe((event) => events.push(event));
  return events;
}

/** Collects a stream in flowing mode and lets tests wait for conditions on it, event-driven. */
export class Collector {
  private readonly chunks: Buffer[] = [];
  length = 0;
  ended = false;
  error: Error | undefined;
  private readonly listeners = new Set<() => void>();

  constructor(readonly stream: Readable) {
    stream.on("data", (chunk: Buffer) => {
      this.chunks.push(Buffer.from(chunk));
      this.length += chunk.byteLength;
      this.fire();
    });
    stream.on("end", () => {
      this.ended = true;
      this.fire();
    });
    stream.on("error", (error: Error) => {
      this.error = error;
      this.fire();
    });
  }

  buffer(): Buffer {
    return Buffer.concat(this.chunks);
  }

  waitForLength(length: number): Promise<void> {
    return this.waitFor(() => this.length >= length, `${length} bytes`);
  }

  waitForEnd(): Promise<void> {
    return this.waitFor(() => this.ended, "end");
  }

  async waitForError(): Promise<Error> {
    await this.waitFor(() => this.error !== undefined, "an error", true);
    return this.error!;
  }

  private waitFor(predicate: () => boolean, what: string, errorExpected = false): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (predicate()) finish(undefined);
        else if (!errorExpected && this.error !== undefined) finish(this.error);
      };
      const timer = setTimeout(() => {
        finish(new Error(`timed out waiting for ${what}: have ${this.length} bytes, ended=${this.ended}`));
      }, WAIT_TIMEOUT_MS);
      const finish = (error: Error | undefined): void => {
        clearTimeout(timer);
        this.listeners.delete(check);
        if (error === undefined) resolve();
        else reject(error);
      };
      this.listeners.add(check);
      check();
    });
  }

  private fire(): void {
    for (const listener of [...this.listeners]) listener();
  }
}

/** A consumer that takes one chunk and then never asks for more: measures how far a stream reads ahead. */
export function stuckConsumer(stream: Readable): { pulledBytes: () => number } {
  let received = 0;
  const sink = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _encoding, _callback) {
      received += chunk.byteLength;
      // Never calls back: the sink stays full.
    },
  });
  stream.pipe(sink);
  return { pulledBytes: () => received + stream.readableLength };
}
