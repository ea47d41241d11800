import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { Readable } from "node:stream";
import { setImmediate as tick } from "node:timers/promises";
import { describe, it } from "node:test";
import type { ServerWritableStream } from "@grpc/grpc-js";
import type { ReadPiecesRequest } from "../gen/peer/v1/peer.js";
import { MESSAGE_DATA_BYTES } from "./peer-service.js";
import { MAX_QUEUED_MESSAGES, MessagePool, PieceSender } from "./piece-sender.js";
import { decodeChunk } from "./wire-codec.js";

/** A call that keeps every write pending until the test flushes it, like a client that stopped reading. */
class HeldCall extends EventEmitter {
  readonly written: Buffer[] = [];
  readonly pending: ((error?: Error | null) => void)[] = [];
  writableNeedDrain = false;
  write(message: Buffer, callback: (error?: Error | null) => void): boolean {
    this.written.push(message);
    this.pending.push(callback);
    return !this.writableNeedDrain;
  }
  flushOne(): void {
    this.pending.shift()?.();
  }
}

/** A source of `chunks` 256 KiB chunks that counts how many were pulled. */
function countingSource(chunks: number): { stream: Readable; pulled: () => number } {
  let pulled = 0;
  const stream = new Readable({
    highWaterMark: 256 * 1024,
    read() {
      if (pulled === chunks) this.push(null);
      else {
        pulled++;
        this.push(Buffer.alloc(256 * 1024, pulled));
      }
    },
  });
  return { stream, pulled: () => pulled };
}

const asCall = (call: HeldCall): ServerWritableStream<ReadPiecesRequest, Buffer> => call as unknown as ServerWritableStream<ReadPiecesRequest, Buffer>;

describe("PieceSender", () => {
  it("cuts consecutive pieces from one source into chunk messages at piece boundaries", async () => {
    // Flushes every write at once, so pooled buffers are reused: messages are decoded as they are written.
    const decoded: { piece: number; offset: number; data: Buffer }[] = [];
    const call = {
      writableNeedDrain: false,
      on: () => call,
      off: () => call,
      write(message: Buffer, callback: () => void): boolean {
        const chunk = decodeChunk(message);
        decoded.push({ ...chunk, data: Buffer.from(chunk.data) });
        setImmediate(callback);
        return true;
      },
    };
    const pool = new MessagePool();
    const sender = new PieceSender({ call: call as unknown as ServerWritableStream<ReadPiecesRequest, Buffer>, signal: new AbortController().signal, pool });
    const lengths = [1.5 * MESSAGE_DATA_BYTES, 734_003];
    const bytes = Buffer.alloc(lengths[0]! + lengths[1]!);
    for (let i = 0; i < bytes.length; i++) bytes[i] = i % 251;
    // Source chunks that straddle message and piece boundaries.
    const chunks = Array.from({ length: Math.ceil(bytes.length / 300_000) }, (_, i) => bytes.subarray(i * 300_000, (i + 1) * 300_000));
    await sender.sendPieces([{ index: 4, length: lengths[0]! }, { index: 5, length: lengths[1]! }], Readable.from(chunks));
    assert.deepEqual(decoded.map((c) => [c.piece, c.offset, c.data.length]), [
      [4, 0, MESSAGE_DATA_BYTES],
      [4, MESSAGE_DATA_BYTES, 0.5 * MESSAGE_DATA_BYTES],
      [5, 0, 734_003],
    ]);
    assert.ok(Buffer.concat(decoded.map((c) => c.data)).equals(bytes));
    await assert.rejects(sender.sendPieces([{ index: 0, length: 10 }], Readable.from([Buffer.alloc(11)])), /more bytes/);
    await assert.rejects(sender.sendPieces([{ index: 0, length: 10 }], Readable.from([Buffer.alloc(9)])), /fewer bytes/);
    sender.dispose();
  });

  it("reads no further than the messages the call has not flushed", async () => {
    const call = new HeldCall();
    const controller = new AbortController();
    const sender = new PieceSender({ call: asCall(call), signal: controller.signal, pool: new MessagePool() });
    // A 16 MiB piece: 64 source chunks, 16 messages.
    const source = countingSource(64);
    const sending = sender.sendPieces([{ index: 0, length: 16 * MESSAGE_DATA_BYTES }], source.stream);
    for (let i = 0; i < 20; i++) await tick();
    assert.equal(call.written.length, MAX_QUEUED_MESSAGES);
    // What was written, plus at most the source's own small buffer and the chunk being filled.
    const readAhead = source.pulled() * 256 * 1024 - call.written.length * MESSAGE_DATA_BYTES;
    assert.ok(readAhead <= 2 * MESSAGE_DATA_BYTES, `read ${readAhead} bytes ahead of the call`);
    call.flushOne();
    for (let i = 0; i < 20; i++) await tick();
    assert.equal(call.written.length, MAX_QUEUED_MESSAGES + 1, "one flushed message lets one more through");
    controller.abort();
    await assert.rejects(sending, { name: "AbortError" });
    sender.dispose();
    assert.ok(source.stream.destroyed || source.pulled() < 64);
  });

  it("waits for 'drain' after write() returned false", async () => {
    const call = new HeldCall();
    call.writableNeedDrain = true;
    const sender = new PieceSender({ call: asCall(call), signal: new AbortController().signal, pool: new MessagePool() });
    const sending = sender.sendPieces([{ index: 3, length: 2 * MESSAGE_DATA_BYTES }], countingSource(8).stream);
    for (let i = 0; i < 20; i++) await tick();
    assert.equal(call.written.length, 1);
    call.flushOne();
    for (let i = 0; i < 20; i++) await tick();
    assert.equal(call.written.length, 1, "a flushed write is not enough while the stream wants a drain");
    call.writableNeedDrain = false;
    call.emit("drain");
    await sending;
    assert.equal(call.written.length, 2);
    const second = decodeChunk(call.written[1]!);
    assert.equal(second.piece, 3);
    assert.equal(second.offset, MESSAGE_DATA_BYTES);
    assert.equal(second.data.length, MESSAGE_DATA_BYTES);
    sender.dispose();
  });
});
