import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { ReadPiecesResponse } from "../gen/peer/v1/peer.js";
import { allocChunkMessage, decodeChunk, encodeChunk } from "./wire-codec.js";

describe("ReadPiecesResponse codec", () => {
  it("encodes what the generated codec decodes", () => {
    for (const [piece, offset] of [[0, 0], [1, 1048576], [2047, 15 * 1048576], [0xffffffff, 0x7fffffff]] as const) {
      const data = Buffer.from(`piece ${piece} at ${offset}`);
      assert.deepEqual(ReadPiecesResponse.decode(encodeChunk(piece, offset, data)), { piece, offset, data });
    }
  });

  it("decodes what the generated codec encodes, without copying the data", () => {
    const data = Buffer.alloc(300_000, 7);
    const encoded = Buffer.from(ReadPiecesResponse.encode({ piece: 5, offset: 0, data }).finish());
    const decoded = decodeChunk(encoded);
    assert.equal(decoded.piece, 5);
    assert.equal(decoded.offset, 0);
    assert.ok(decoded.data.equals(data));
    assert.equal(decoded.data.buffer, encoded.buffer, "data is a view of the message");
  });

  it("accepts fields in any order and skips unknown ones", () => {
    const writer = new BinaryWriter();
    writer.uint32(26).bytes(Buffer.from("abc"));
    writer.uint32((9 << 3) | 2).string("future field");
    writer.uint32(16).uint32(42);
    writer.uint32(8).uint32(3);
    assert.deepEqual(decodeChunk(Buffer.from(writer.finish())), { piece: 3, offset: 42, data: Buffer.from("abc") });
  });

  it("rejects a truncated message", () => {
    const encoded = encodeChunk(1, 2, Buffer.alloc(100));
    assert.throws(() => decodeChunk(encoded.subarray(0, encoded.length - 1)), RangeError);
  });

  it("leaves room for exactly the data in an allocated message", () => {
    const chunk = allocChunkMessage(7, 1024, 10);
    chunk.data.fill(1);
    assert.equal(chunk.data.length, 10);
    assert.deepEqual(decodeChunk(chunk.message), { piece: 7, offset: 1024, data: Buffer.alloc(10, 1) });
  });
});
