import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { setImmediate as yieldToEventLoop, setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import { digestAlgorithm, type Digest } from "../oci/index.js";
import { readExactly } from "./disk-layout.js";
import { HASH_CHUNK_BYTES } from "./partial-core.js";

/** Hashes a file in chunks, yielding to the event loop between chunks so serving requests keeps priority. */
export async function fileMatchesDigest(path: string, digest: Digest, signal: AbortSignal): Promise<boolean> {
  const handle = await open(path, "r");
  try {
    const { size } = await handle.stat();
    const hash = createHash(digestAlgorithm(digest));
    for (let position = 0; position < size;) {
      signal.throwIfAborted();
      const length = Math.min(HASH_CHUNK_BYTES, size - position);
      hash.update(await readExactly(handle, position, length));
      position += length;
      await yieldToEventLoop();
    }
    return `${digestAlgorithm(digest)}:${hash.digest("hex")}` === digest;
  } finally {
    await handle.close();
  }
}

export interface BackgroundVerifierOptions<T> {
  /** Wait before the first blob, so start-up and the first requests are not slowed down. */
  readonly startDelayMs: number;
  /** The next item to verify, or undefined when there is none. */
  readonly next: () => T | undefined;
  readonly verify: (item: T, signal: AbortSignal) => Promise<void>;
  readonly logger: Logger | undefined;
}

/** Verifies items one at a time, in the background, until there are none left or it is stopped. */
export class BackgroundVerifier<T> {
  private readonly controller = new AbortController();
  private running: Promise<void> | undefined;

  constructor(private readonly options: BackgroundVerifierOptions<T>) {}

  start(): void {
    this.running ??= this.run().catch((error: unknown) => {
      if (!this.controller.signal.aborted) this.options.logger?.error({ err: error }, "background verification stopped");
    });
  }

  async stop(): Promise<void> {
    this.controller.abort();
    await this.running;
  }

  private async run(): Promise<void> {
    const signal = this.controller.signal;
    // ref: false — a pending verification never keeps the process alive.
    await sleep(this.options.startDelayMs, undefined, { signal, ref: false });
    for (let item = this.options.next(); item !== undefined && !signal.aborted; item = this.options.next()) {
      await this.options.verify(item, signal);
    }
  }
}
