import { randomBytes } from "node:crypto";
import { type FileHandle, open, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { type Digest, createDigestHash } from "../oci/index.js";
import { ImagegenError } from "./errors.js";

/** Two measured best on this class of machine: one leaves the disk idle while hashing, more adds nothing. */
export const MAX_WRITES_IN_FLIGHT = 2;

export interface WrittenBlob {
  readonly digest: Digest;
  readonly size: number;
}

/**
 * Streams a blob to a temporary file while hashing it, then renames it to a name chosen from its
 * digest. Nothing is ever visible under a digest name before its content is complete.
 *
 * Up to MAX_WRITES_IN_FLIGHT positional writes run on the libuv pool while the caller produces
 * and hashes the next chunk, so generation, hashing and disk I/O overlap; awaiting `write` is the
 * backpressure, and memory stays bounded by that many chunks.
 */
export class BlobWriter {
  private readonly hash = createDigestHash("sha256");
  private position = 0;
  private readonly inFlight: Promise<void>[] = [];
  // A failed background write is parked here and reported by the next call, never left unhandled.
  private failure: unknown = undefined;
  private state: "open" | "committed" | "discarded" = "open";

  private constructor(
    private readonly handle: FileHandle,
    readonly tempPath: string,
    private readonly signal: AbortSignal | undefined,
  ) {}

  /** Creates a temporary file in `directory` (which must exist); the final rename stays on one file system. */
  static async open(directory: string, signal?: AbortSignal): Promise<BlobWriter> {
    checkAborted(signal);
    const tempPath = join(directory, `.imagegen-${process.pid}-${randomBytes(6).toString("hex")}.tmp`);
    try {
      return new BlobWriter(await open(tempPath, "wx"), tempPath, signal);
    } catch (cause) {
      throw new ImagegenError("ERR_IMAGEGEN_IO", `cannot create ${tempPath}`, { cause });
    }
  }

  get bytesWritten(): number {
    return this.position;
  }

  /** Hashes `chunk` and queues it for writing. The caller must not modify `chunk` afterwards. */
  async write(chunk: Uint8Array): Promise<void> {
    if (this.state !== "open") throw new ImagegenError("ERR_IMAGEGEN_IO", "write after commit or discard");
    checkAborted(this.signal);
    if (chunk.byteLength === 0) return;
    this.hash.update(chunk);
    while (this.inFlight.length >= MAX_WRITES_IN_FLIGHT) await this.inFlight.shift();
    this.throwIfFailed();
    const position = this.position;
    this.position += chunk.byteLength;
    this.inFlight.push(
      writeFully(this.handle, chunk, position).catch((cause: unknown) => {
        this.failure ??= cause;
      }),
    );
  }

  /**
   * Finishes the file and renames it to `destination(digest)`. Returns digest and size.
   * On failure the temporary file is removed.
   */
  async commit(destination: (digest: Digest) => string): Promise<WrittenBlob> {
    if (this.state !== "open") throw new ImagegenError("ERR_IMAGEGEN_IO", "commit after commit or discard");
    try {
      checkAborted(this.signal);
      await this.settle();
      await this.handle.close();
      const digest = `sha256:${this.hash.digest("hex")}` as Digest;
      await rename(this.tempPath, destination(digest));
      this.state = "committed";
      return { digest, size: this.position };
    } catch (cause) {
      await this.discard();
      throw wrapIoError(cause, `cannot write blob ${this.tempPath}`);
    }
  }

  /** Closes and removes the temporary file. Safe to call at any time, also after commit (then a no-op). */
  async discard(): Promise<void> {
    if (this.state !== "open") return;
    this.state = "discarded";
    await Promise.all(this.inFlight.splice(0));
    // close() rejects if commit already closed the handle; the file is removed either way.
    await this.handle.close().catch(() => undefined);
    await rm(this.tempPath, { force: true });
  }

  private async settle(): Promise<void> {
    await Promise.all(this.inFlight.splice(0));
    this.throwIfFailed();
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw wrapIoError(this.failure, `cannot write ${this.tempPath}`);
  }
}

/** Throws ERR_IMAGEGEN_ABORTED if `signal` has fired. */
export function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) {
    throw new ImagegenError("ERR_IMAGEGEN_ABORTED", "image generation aborted", { cause: signal.reason });
  }
}

function wrapIoError(cause: unknown, message: string): ImagegenError {
  return cause instanceof ImagegenError ? cause : new ImagegenError("ERR_IMAGEGEN_IO", message, { cause });
}

async function writeFully(handle: FileHandle, chunk: Uint8Array, position: number): Promise<void> {
  let offset = 0;
  while (offset < chunk.byteLength) {
    const { bytesWritten } = await handle.write(chunk, offset, chunk.byteLength - offset, position + offset);
    offset += bytesWritten;
  }
}
