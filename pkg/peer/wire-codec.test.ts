import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { ExchangeResponse, ReadPiecesResponse } from "../gen/peer/v1/peer.js";
import { frameMessage, MessageFramer } from "./grpc-wire.js";
import { ChunkDecoder, chunkMessageEndingAt, decodeChunk, encodeChunk, encodeEnd, type ChunkSink } from "./wire-codec.js";

/** Records what a ChunkDecoder hands on: one entry per message, data joined. */
class RecordingSink implements ChunkSink {
  readonly chunks: { piece: number; offset: number; length: number; requestId: number; data: Buffer[] }[] = [];
  readonly ends: { requestId: number; code: number; message: string }[] = [];
  /** Whether each data view pointed into the received chunk (no copy). */
  readonly views: boolean[] = [];
  received: Buffer | undefined;

  onChunkStart(piece: number, offset: number, length: number, requestId: number): void {
    this.chunks.push({ piece, offset, length, requestId, data: [] });
  }

  onEnd(requestId: number, code: number, message: string): void {
    this.ends.push({ requestId, code, message });
  }

  onChunkData(bytes: Buffer): void {
    this.chunks.at(-1)?.data.push(Buffer.from(bytes));
    this.views.push(this.received !== undefined && bytes.buffer === this.received.buffer);
  }
}

/** Feeds framed messages to a decoder in slices of `step` bytes, as DATA frames would arrive. */
function feed(messages: readonly Buffer[], step: number, sink: RecordingSink): void {
  const framer = new MessageFramer(1 << 24, new ChunkDecoder(sink));
  const stream = Buffer.concat(messages.map((m) => frameMessage(m)));
  for (let offset = 0; offset < stream.length; offset += step) {
    const slice = stream.subarray(offset, offset + step);
    sink.received = slice;
    framer.push(slice);
  }
  assert.ok(framer.idle);
}

describe("ReadPiecesResponse codec", () => {
  it("encodes what the generated codec decodes", () => {
    for (const [piece, offset] of [
      [0, 0],
      [1, 1048576],
      [2047, 15 * 1048576],
      [0xffffffff, 0x7fffffff],
    ] as const) {
      const data = Buffer.from(`piece ${piece} at ${offset}`);
      assert.deepEqual(ReadPiecesResponse.decode(encodeChunk(piece, offset, data)), { piece, offset, data });
    }
  });

  it("lays a message out at the end of a buffer, leaving room for the gRPC prefix in front", () => {
    const buffer = Buffer.alloc(100);
    const chunk = chunkMessageEndingAt(buffer, 100, 7, 1024, 10);
    chunk.data.fill(1);
    assert.equal(chunk.message.byteOffset - buffer.byteOffset + chunk.message.length, 100);
    assert.ok(chunk.message.byteOffset - buffer.byteOffset >= 5);
    assert.deepEqual(decodeChunk(chunk.message), { piece: 7, offset: 1024, data: Buffer.alloc(10, 1), requestId: 0, end: undefined });
    assert.throws(() => chunkMessageEndingAt(Buffer.alloc(8), 8, 1, 0, 10), RangeError);
  });

  it("streams the data of Shoal's messages as views of the received bytes, whatever the slicing", () => {
    const data = Buffer.alloc(300_000, 7);
    for (const step of [1, 3, 7, 16_384, 1 << 20]) {
      const sink = new RecordingSink();
      feed([encodeChunk(5, 0, data), encodeChunk(5, data.length, Buffer.from("tail"))], step, sink);
      assert.deepEqual(
        sink.chunks.map((c) => ({ piece: c.piece, offset: c.offset, length: c.length, data: Buffer.concat(c.data) })),
        [
          { piece: 5, offset: 0, length: data.length, data },
          { piece: 5, offset: data.length, length: 4, data: Buffer.from("tail") },
        ],
        `step ${step}`,
      );
      assert.ok(sink.views.every(Boolean), `step ${step}: no copies`);
    }
  });

  it("decodes other encoders' layouts too: the generated codec, fields in any order, unknown fields", () => {
    const generated = Buffer.from(ReadPiecesResponse.encode({ piece: 9, offset: 4096, data: Buffer.from("generated") }).finish());
    const writer = new BinaryWriter();
    writer.uint32(26).bytes(Buffer.from("abc"));
    writer.uint32((9 << 3) | 2).string("future field");
    writer.uint32(16).uint32(42);
    writer.uint32(8).uint32(3);
    const reordered = Buffer.from(writer.finish());
    for (const step of [1, 5, 1000]) {
      const sink = new RecordingSink();
      feed([generated, reordered], step, sink);
      assert.deepEqual(
        sink.chunks.map((c) => [c.piece, c.offset, Buffer.concat(c.data).toString()]),
        [
          [9, 4096, "generated"],
          [3, 42, "abc"],
        ],
      );
    }
  });

  it("rejects a truncated message", () => {
    const encoded = encodeChunk(1, 2, Buffer.alloc(100));
    assert.throws(() => decodeChunk(encoded.subarray(0, encoded.length - 1)), RangeError);
  });
});

describe("ExchangeResponse codec", () => {
  it("chunks tagged with a request id and ends decode with the generated codec", () => {
    const data = Buffer.from("exchange chunk");
    assert.deepEqual(ExchangeResponse.decode(encodeChunk(3, 4096, data, 0xfffffffe)), {
      piece: 3,
      offset: 4096,
      data,
      requestId: 0xfffffffe,
      end: undefined,
    });
    assert.deepEqual(ExchangeResponse.decode(encodeEnd(7, 9, "piece 3 is not held")), {
      piece: 0,
      offset: 0,
      data: Buffer.alloc(0),
      requestId: 7,
      end: { code: 9, message: "piece 3 is not held" },
    });
  });

  it("streams tagged chunks as views, and hands ends to the sink, interleaved as they come", () => {
    const data = Buffer.alloc(200_000, 3);
    const generatedEnd = Buffer.from(
      ExchangeResponse.encode({ piece: 0, offset: 0, data: Buffer.alloc(0), requestId: 2, end: { code: 0, message: "" } }).finish(),
    );
    for (const step of [1, 7, 16_384]) {
      const sink = new RecordingSink();
      feed([encodeChunk(1, 0, data, 1), encodeChunk(8, 0, Buffer.from("x"), 2), generatedEnd, encodeEnd(1, 5, "gone")], step, sink);
      assert.deepEqual(
        sink.chunks.map((c) => [c.requestId, c.piece, c.length]),
        [
          [1, 1, data.length],
          [2, 8, 1],
        ],
        `step ${step}`,
      );
      assert.ok(Buffer.concat(sink.chunks[0]?.data ?? []).equals(data));
      assert.deepEqual(sink.ends, [
        { requestId: 2, code: 0, message: "" },
        { requestId: 1, code: 5, message: "gone" },
      ]);
      assert.ok(sink.views.slice(0, -1).every(Boolean), `step ${step}: the big chunk's data is not copied`);
    }
  });
});
