import assert from "node:assert/strict";
import { setImmediate as tick } from "node:timers/promises";
import { describe, it } from "node:test";
import { READ_CHUNK_BYTES } from "./read-chunks.js";
import { type FreshBytes, MAX_TEE_BUFFERED_BYTES, TailReadable, type TailSource } from "./tail-readable.js";
import { testBytes } from "./testing/conformance-helpers.js";

/** A partial blob's tail side: bytes become available as `write` announces them; reads are counted. */
class FakeTail implements TailSource {
  state: "open" | "committed" | "aborted" = "open";
  verified = false;
  /** Bytes [0, written) are available. */
  written = 0;
  readBytes = 0;
  private readonly listeners = new Set<(fresh?: FreshBytes) => void>();

  constructor(readonly data: Buffer) {}

  get size(): number {
    return this.data.length;
  }

  /** Makes [written, end) available; with `tee` the announcement carries the bytes, in a buffer reused afterwards. */
  write(end: number, tee: boolean): void {
    const position = this.written;
    this.written = end;
    const scratch = Buffer.from(this.data.subarray(position, end));
    for (const listener of [...this.listeners]) listener(tee ? { position, bytes: scratch } : undefined);
    scratch.fill(0xee); // the writer reuses its buffer once the announcement returns
  }

  verify(): void {
    this.verified = true;
    this.state = "committed";
    for (const listener of [...this.listeners]) listener();
  }

  abortError(): Error {
    return new Error("aborted");
  }

  availableEnd(position: number, limit: number): number {
    if (this.verified) return limit;
    return Math.min(Math.max(position, this.written), limit);
  }

  readInto(target: Uint8Array, position: number): Promise<void> {
    this.readBytes += target.byteLength;
    target.set(this.data.subarray(position, position + target.byteLength));
    return Promise.resolve();
  }

  onProgress(listener: (fresh?: FreshBytes) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  acquireReader(): void {
    // Nothing to hold open.
  }

  releaseReader(): void {
    // Nothing to release.
  }
}

function collect(stream: TailReadable): { chunks: Buffer[]; ended: Promise<void> } {
  const chunks: Buffer[] = [];
  stream.on("data", (chunk: Buffer) => chunks.push(Buffer.from(chunk)));
  return { chunks, ended: new Promise((resolve, reject) => stream.once("end", resolve).once("error", reject)) };
}

describe("TailReadable", () => {
  const size = 3 * 1024 * 1024 + 17;

  it("a waiting reader copies announced bytes from memory, and reads from storage only the final byte, after verification", async () => {
    const source = new FakeTail(testBytes(size));
    const { chunks, ended } = collect(new TailReadable(source, { start: 0, end: size - 1 }));
    await tick();
    for (let end = 100_000; end < size; end += 100_000) {
      source.write(end, true);
      await tick();
    }
    source.write(size, true);
    await tick();
    assert.equal(Buffer.concat(chunks).length, size - 1, "everything but the final byte before verification");
    assert.equal(source.readBytes, 0, "nothing read back from storage");
    source.verify();
    await ended;
    assert.deepEqual(Buffer.concat(chunks), source.data);
    assert.equal(source.readBytes, 1, "the final byte comes from storage once verified");
  });

  it("a reader behind the announced bytes reads from storage, and a range takes only its bytes", async () => {
    const source = new FakeTail(testBytes(size));
    source.write(500_000, false);
    const start = 1000;
    const end = 2_000_000;
    const { chunks, ended } = collect(new TailReadable(source, { start, end }));
    await tick();
    for (let at = 700_000; at < size; at += 200_000) {
      source.write(at, true);
      await tick();
    }
    source.write(size, true);
    await ended;
    assert.deepEqual(Buffer.concat(chunks), source.data.subarray(start, end + 1));
    assert.ok(source.readBytes >= 500_000 - start, "the bytes that came before it started waiting are read from storage");
  });

  it("a waiting reader whose consumer is slow takes a whole announcement from memory, up to a bound", async () => {
    const big = MAX_TEE_BUFFERED_BYTES + 4 * READ_CHUNK_BYTES;
    const source = new FakeTail(testBytes(big));
    const stream = new TailReadable(source, { start: 0, end: big - 1 });
    stream.read(0); // starts waiting, with nobody reading on
    await tick();
    source.write(big, true);
    // Past the buffer's mark (one chunk), up to the bound; the writer's memory is reused after the announcement.
    const held = stream.readableLength;
    assert.ok(
      held >= MAX_TEE_BUFFERED_BYTES && held <= MAX_TEE_BUFFERED_BYTES + READ_CHUNK_BYTES,
      `held ${held} bytes ahead of the consumer`,
    );
    assert.equal(source.readBytes, 0);
    const { chunks, ended } = collect(stream);
    await tick();
    source.verify();
    await ended;
    assert.deepEqual(Buffer.concat(chunks), source.data);
    assert.equal(source.readBytes, big - held, "what did not fit is read back from storage");
  });

  it("bytes announced without a tee are read from storage", async () => {
    const source = new FakeTail(testBytes(size));
    const { chunks, ended } = collect(new TailReadable(source, { start: 0, end: size - 1 }));
    await tick();
    source.write(size, false);
    source.verify();
    await ended;
    assert.deepEqual(Buffer.concat(chunks), source.data);
    assert.equal(source.readBytes, size);
  });
});
