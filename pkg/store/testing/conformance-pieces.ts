import assert from "node:assert/strict";
import { it } from "node:test";
import { digestOf } from "../../oci/index.js";
import { MIN_PIECE_SIZE_BYTES, choosePieceSize, pieceSpan, sha256Of } from "../../piece/index.js";
import { type BlobStoreFactory, expectStoreError, putBlob, testBytes, withStore } from "./conformance-helpers.js";

/** Piece hashes recorded by the write paths, and positional readers of complete and partial blobs. */
export function runPieceConformance(factory: BlobStoreFactory): void {
  const pieceSize = MIN_PIECE_SIZE_BYTES;
  const size = 3 * pieceSize + 4321;
  const data = testBytes(size, 41);
  const digest = digestOf(data);
  const expected = [0, 1, 2, 3].map((index) => {
    const { start, end } = pieceSpan(index, size, pieceSize);
    return sha256Of(data.subarray(start, end));
  });

  it("append records every piece's hash as it writes, and pieceHashes returns them after commit", () =>
    withStore(factory, undefined, async (store) => {
      assert.equal(choosePieceSize(size), pieceSize);
      const partial = await store.openPartial(digest, size, { pieceSize });
      // Chunks that straddle piece boundaries.
      for (let offset = 0; offset < size; offset += 700_001) await partial.append(data.subarray(offset, Math.min(offset + 700_001, size)));
      for (const [index, hash] of expected.entries()) assert.deepEqual(Buffer.from(partial.pieceHash(index) ?? []), hash, `piece ${index}`);
      await partial.commit();
      const list = await store.pieceHashes(digest);
      assert.equal(list?.pieceSize, pieceSize);
      assert.deepEqual(
        list.hashes.map((h) => Buffer.from(h)),
        expected,
      );
    }));

  it("writePiece records the hash it is given; pieces resumed without one are hashed at commit", () =>
    withStore(factory, undefined, async (store) => {
      const partial = await store.openPartial(digest, size, { pieceSize });
      const piece = (index: number): Buffer => {
        const { start, end } = pieceSpan(index, size, pieceSize);
        return data.subarray(start, end);
      };
      await partial.writePiece(2, piece(2), expected[2]);
      assert.deepEqual(Buffer.from(partial.pieceHash(2) ?? []), expected[2]);
      assert.equal(partial.pieceHash(1), undefined, "not held");
      await partial.writePiece(1, piece(1));
      assert.deepEqual(Buffer.from(partial.pieceHash(1) ?? []), expected[1], "computed when not given");
      await partial.abort(new Error("restart"), { keepData: true });
      const resumed = await store.openPartial(digest, size, { pieceSize });
      assert.equal(resumed.pieceHash(2), undefined, "a resumed piece has no recorded hash");
      await resumed.writePiece(0, piece(0), expected[0]);
      await resumed.writePiece(3, piece(3), expected[3]);
      await resumed.commit();
      const list = await store.pieceHashes(digest);
      assert.deepEqual(
        list?.hashes.map((h) => Buffer.from(h)),
        expected,
      );
    }));

  it("pieceHashes computes the hashes of a blob stored without them (non-standard piece size), and undefined for unknown blobs", () =>
    withStore(factory, undefined, async (store) => {
      const small = testBytes(5000, 43);
      const info = await putBlob(store, small, { pieceSize: 64 });
      const list = await store.pieceHashes(info.digest);
      assert.equal(list?.pieceSize, choosePieceSize(5000));
      assert.deepEqual(
        list.hashes.map((h) => Buffer.from(h)),
        [sha256Of(small)],
      );
      assert.equal(await store.pieceHashes(digestOf(Buffer.from("nothing here"))), undefined);
    }));

  it("openReader reads positions of a complete blob into the caller's buffer and rejects reads outside it", () =>
    withStore(factory, undefined, async (store) => {
      const info = await putBlob(store, data, { pieceSize });
      const reader = await store.openReader(info.digest);
      try {
        assert.equal(reader.size, size);
        const target = Buffer.alloc(1000);
        await reader.read(target, pieceSize - 10);
        assert.deepEqual(target, data.subarray(pieceSize - 10, pieceSize + 990));
        await expectStoreError(reader.read(Buffer.alloc(10), size - 5), "ERR_STORE_INVALID_ARGUMENT");
      } finally {
        await reader.close();
      }
      await expectStoreError(reader.read(Buffer.alloc(1), 0), "ERR_STORE_INVALID_ARGUMENT");
      await expectStoreError(store.openReader(digestOf(Buffer.from("absent"))), "ERR_STORE_BLOB_NOT_FOUND");
    }));

  it("a partial's reader reads only held bytes, and the final byte only after commit", () =>
    withStore(factory, undefined, async (store) => {
      const partial = await store.openPartial(digest, size, { pieceSize });
      const reader = partial.openReader();
      try {
        const { start, end } = pieceSpan(1, size, pieceSize);
        await expectStoreError(reader.read(Buffer.alloc(10), start), "ERR_STORE_INVALID_ARGUMENT");
        await partial.writePiece(1, data.subarray(start, end), expected[1]);
        const target = Buffer.alloc(end - start);
        await reader.read(target, start);
        assert.deepEqual(target, data.subarray(start, end));
        for (const index of [0, 2, 3]) {
          const span = pieceSpan(index, size, pieceSize);
          await partial.writePiece(index, data.subarray(span.start, span.end), expected[index]);
        }
        await expectStoreError(reader.read(Buffer.alloc(1), size - 1), "ERR_STORE_INVALID_ARGUMENT");
        await partial.commit();
        const last = Buffer.alloc(1);
        await reader.read(last, size - 1);
        assert.equal(last[0], data[size - 1]);
      } finally {
        await reader.close();
      }
    }));
}
