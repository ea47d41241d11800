import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type Digest, digestOf } from "../../oci/index.js";
import { isStoreError } from "../errors.js";
import { runPieceConformance } from "./conformance-pieces.js";
import { runQuotaConformance } from "./conformance-quota.js";
import { runTailConformance } from "./conformance-tail.js";
import {
  type BlobStoreFactory,
  expectStoreError,
  expectStoreErrorSync,
  putBlob,
  readAll,
  recordEvents,
  testBytes,
  withStore,
} from "./conformance-helpers.js";

export type { BlobStoreFactory, ConformanceStoreOptions } from "./conformance-helpers.js";

/**
 * The behaviour every BlobStore must show. `factory` creates an empty store; it must honour the quota
 * options and the `now` clock (the quota tests depend on them) and may ignore the argument otherwise.
 */
export function runBlobStoreConformance(name: string, factory: BlobStoreFactory): void {
  describe(`BlobStore conformance: ${name}`, () => {
    runBasicConformance(factory);
    runTailConformance(factory);
    runQuotaConformance(factory);
    runPieceConformance(factory);
  });
}

function runBasicConformance(factory: BlobStoreFactory): void {
  it("append + commit makes the blob visible only after commit", () =>
    withStore(factory, undefined, async (store) => {
      const events = recordEvents(store);
      const data = testBytes(1000);
      const digest = digestOf(data);
      const partial = await store.openPartial(digest, data.length, { pieceSize: 64 });
      assert.equal(partial.pieceCount, 16);
      for (let offset = 0; offset < data.length; offset += 100) await partial.append(data.subarray(offset, offset + 100));
      assert.equal(partial.heldPieces, 16);
      assert.equal(partial.appendOffset, 1000);
      assert.equal(await store.stat(digest), undefined);
      assert.deepEqual(await store.list(), []);
      await expectStoreError(store.createReadStream(digest), "ERR_STORE_BLOB_NOT_FOUND");
      const info = await partial.commit();
      assert.deepEqual(info, { digest, size: 1000 });
      assert.equal(partial.state, "committed");
      assert.deepEqual(await store.stat(digest), info);
      assert.deepEqual(await store.list(), [info]);
      assert.deepEqual(await readAll(await store.createReadStream(digest)), data);
      assert.deepEqual(await partial.commit(), info, "commit is idempotent");
      assert.deepEqual(events, [{ type: "added", blob: info }]);
      assert.equal(store.getPartial(digest), undefined);
      assert.deepEqual(store.usage(), { usedBytes: 1000, quotaBytes: 0, blobs: 1, partials: 0 });
    }));

  it("writePiece out of order + commit", () =>
    withStore(factory, undefined, async (store) => {
      const data = testBytes(1000, 2);
      const digest = digestOf(data);
      const partial = await store.openPartial(digest, data.length, { pieceSize: 64 });
      const order = [5, 3, 15, 1, 9, 0, 2, 4, 14, 6, 7, 8, 10, 11, 12, 13];
      for (const index of order.slice(0, 5)) await partial.writePiece(index, data.subarray(index * 64, index * 64 + 64));
      assert.equal(partial.appendOffset, 0, "nothing contiguous from the start yet");
      assert.equal(partial.hasPiece(15), true);
      assert.equal(partial.hasPiece(0), false);
      await partial.writePiece(0, data.subarray(0, 64));
      assert.equal(partial.appendOffset, 2 * 64, "pieces 0 and 1 are contiguous");
      for (const index of order.slice(6)) await partial.writePiece(index, data.subarray(index * 64, Math.min(index * 64 + 64, 1000)));
      await partial.writePiece(3, data.subarray(3 * 64, 4 * 64)); // already held: a no-op
      assert.equal(partial.heldPieces, 16);
      assert.equal(Buffer.from(partial.bitmap()).toString("hex"), "ffff");
      await partial.commit();
      assert.deepEqual(await readAll(await store.createReadStream(digest)), data);
    }));

  it("mixes append and writePiece, appendOffset tracking both", () =>
    withStore(factory, undefined, async (store) => {
      const data = testBytes(640, 3);
      const digest = digestOf(data);
      const partial = await store.openPartial(digest, data.length, { pieceSize: 64 });
      const piece = (index: number): Buffer => data.subarray(index * 64, index * 64 + 64);
      await partial.append(data.subarray(0, 96));
      assert.equal(partial.appendOffset, 96);
      assert.equal(partial.heldPieces, 1);
      await partial.writePiece(3, piece(3));
      await partial.writePiece(1, piece(1)); // half of it was appended already
      assert.equal(partial.appendOffset, 128);
      await partial.append(data.subarray(128, 200)); // through piece 2 into piece 3, which is held
      assert.equal(partial.appendOffset, 256, "append ran into held piece 3");
      await partial.append(data.subarray(256));
      assert.equal(partial.heldPieces, 10);
      await partial.commit();
      assert.deepEqual(await readAll(await store.createReadStream(digest)), data);
    }));

  it("a digest mismatch on commit makes nothing visible", () =>
    withStore(factory, undefined, async (store) => {
      const events = recordEvents(store);
      const data = testBytes(300, 4);
      const digest = digestOf(testBytes(300, 5));
      const partial = await store.openPartial(digest, data.length, { pieceSize: 64 });
      await partial.append(data);
      await expectStoreError(partial.commit(), "ERR_STORE_DIGEST_MISMATCH");
      assert.equal(partial.state, "aborted");
      assert.equal(await store.stat(digest), undefined);
      assert.deepEqual(await store.list(), []);
      assert.deepEqual(await store.listPartials(), []);
      assert.equal(store.getPartial(digest), undefined);
      assert.deepEqual(events, []);
      assert.equal(store.usage().usedBytes, 0);
      await expectStoreError(partial.commit(), "ERR_STORE_ABORTED");
      const again = await store.openPartial(digest, data.length, { pieceSize: 64 });
      assert.notEqual(again, partial);
      assert.equal(again.heldPieces, 0);
    }));

  it("commit with missing pieces throws ERR_STORE_INCOMPLETE and keeps the partial open", () =>
    withStore(factory, undefined, async (store) => {
      const data = testBytes(200, 6);
      const partial = await store.openPartial(digestOf(data), data.length, { pieceSize: 64 });
      await partial.append(data.subarray(0, 199));
      await expectStoreError(partial.commit(), "ERR_STORE_INCOMPLETE");
      assert.equal(partial.state, "open");
      await partial.append(data.subarray(199));
      assert.equal((await partial.commit()).size, 200);
    }));

  it("keeps the media type of a blob that has one", () =>
    withStore(factory, undefined, async (store) => {
      const manifest = Buffer.from('{"schemaVersion":2}');
      const mediaType = "application/vnd.oci.image.manifest.v1+json";
      const withType = await putBlob(store, manifest, { mediaType });
      assert.equal(withType.mediaType, mediaType);
      assert.equal((await store.stat(withType.digest))?.mediaType, mediaType);
      const plain = await putBlob(store, testBytes(10, 7));
      assert.equal((await store.stat(plain.digest))?.mediaType, undefined);
      assert.equal(store.getPartial(plain.digest), undefined);
    }));

  it("serves inclusive ranges and rejects ranges outside the blob", () =>
    withStore(factory, undefined, async (store) => {
      const data = testBytes(1000, 8);
      const { digest } = await putBlob(store, data);
      const read = async (start?: number, end?: number): Promise<Buffer> =>
        readAll(await store.createReadStream(digest, { ...(start === undefined ? {} : { start }), ...(end === undefined ? {} : { end }) }));
      assert.deepEqual(await read(0, 0), data.subarray(0, 1));
      assert.deepEqual(await read(100, 199), data.subarray(100, 200));
      assert.deepEqual(await read(999), data.subarray(999));
      assert.deepEqual(await read(undefined, 9), data.subarray(0, 10));
      for (const [start, end] of [
        [-1, 10],
        [0, 1000],
        [500, 499],
        [1.5, 10],
        [1000, undefined],
      ] as const) {
        await expectStoreError(
          store.createReadStream(digest, { start, ...(end === undefined ? {} : { end }) }),
          "ERR_STORE_INVALID_ARGUMENT",
        );
      }
      const partial = await store.openPartial(digestOf(testBytes(10, 9)), 10, { pieceSize: 4 });
      expectStoreErrorSync(() => partial.createReadStream({ start: 5, end: 10 }), "ERR_STORE_INVALID_ARGUMENT");
    }));

  it("refuses a partial for a complete blob, shares one per digest, and flags conflicts", () =>
    withStore(factory, undefined, async (store) => {
      const complete = await putBlob(store, testBytes(100, 10));
      await expectStoreError(store.openPartial(complete.digest, 100, { pieceSize: 64 }), "ERR_STORE_BLOB_EXISTS");
      const digest = digestOf(testBytes(100, 11));
      const [a, b] = await Promise.all([
        store.openPartial(digest, 100, { pieceSize: 64 }),
        store.openPartial(digest, 100, { pieceSize: 64 }),
      ]);
      assert.equal(a, b);
      assert.equal(await store.openPartial(digest, 100, { pieceSize: 64 }), a);
      assert.equal(store.getPartial(digest), a);
      await expectStoreError(store.openPartial(digest, 101, { pieceSize: 64 }), "ERR_STORE_CONFLICT");
      await expectStoreError(store.openPartial(digest, 100, { pieceSize: 32 }), "ERR_STORE_CONFLICT");
      const partials = await store.listPartials();
      assert.equal(partials.length, 1);
      assert.equal(partials[0]?.digest, digest);
      assert.equal(partials[0].pieceSize, 64);
      assert.equal(store.usage().partials, 1);
      assert.equal(store.usage().usedBytes, 200, "the open partial's size is reserved");
    }));

  it("delete removes blobs and partials, and lets running readers finish", () =>
    withStore(factory, undefined, async (store) => {
      const events = recordEvents(store);
      const data = testBytes(2000, 12);
      const { digest } = await putBlob(store, data);
      const running = await store.createReadStream(digest);
      assert.equal(await store.delete(digest), true);
      assert.deepEqual(events.at(-1), { type: "removed", digest, reason: "deleted" });
      assert.equal(await store.stat(digest), undefined);
      await expectStoreError(store.createReadStream(digest), "ERR_STORE_BLOB_NOT_FOUND");
      assert.deepEqual(await readAll(running), data, "a reader opened before the delete gets the whole blob");
      assert.equal(await store.delete(digest), false);

      const partialDigest = digestOf(testBytes(100, 13));
      const partial = await store.openPartial(partialDigest, 100, { pieceSize: 64 });
      await partial.append(testBytes(100, 13).subarray(0, 50));
      assert.equal(await store.delete(partialDigest), true);
      assert.equal(partial.state, "aborted");
      assert.equal(store.getPartial(partialDigest), undefined);
      assert.deepEqual(await store.listPartials(), []);
      assert.equal(store.usage().usedBytes, 0);
    }));

  it("stores the zero-byte blob", () =>
    withStore(factory, undefined, async (store) => {
      const digest = digestOf(new Uint8Array(0));
      const partial = await store.openPartial(digest, 0, { pieceSize: 64 });
      assert.equal(partial.pieceCount, 0);
      await partial.append(new Uint8Array(0));
      const info = await partial.commit();
      assert.deepEqual(info, { digest, size: 0 });
      assert.deepEqual(await store.stat(digest), info);
      assert.equal((await readAll(await store.createReadStream(digest))).length, 0);
      const wrong = await store.openPartial(digestOf(testBytes(1, 14)), 0, { pieceSize: 64 });
      await expectStoreError(wrong.commit(), "ERR_STORE_DIGEST_MISMATCH");
    }));

  it("stores sha512 blobs", () =>
    withStore(factory, undefined, async (store) => {
      const data = testBytes(500, 15);
      const info = await putBlob(store, data, { algorithm: "sha512" });
      assert.match(info.digest, /^sha512:[0-9a-f]{128}$/);
      assert.deepEqual(await readAll(await store.createReadStream(info.digest)), data);
      const wrong = await store.openPartial(digestOf(testBytes(500, 16), "sha512"), 500, { pieceSize: 64 });
      await wrong.append(data);
      await expectStoreError(wrong.commit(), "ERR_STORE_DIGEST_MISMATCH");
    }));

  it("rejects invalid arguments", () =>
    withStore(factory, undefined, async (store) => {
      for (const bad of ["sha256:../../etc/passwd", "sha256:" + "A".repeat(64), "md5:abc", "sha256:abc", "../x"]) {
        const digest = bad as Digest;
        await expectStoreError(store.stat(digest), "ERR_STORE_INVALID_ARGUMENT");
        await expectStoreError(store.createReadStream(digest), "ERR_STORE_INVALID_ARGUMENT");
        await expectStoreError(store.openPartial(digest, 10, { pieceSize: 64 }), "ERR_STORE_INVALID_ARGUMENT");
        await expectStoreError(store.delete(digest), "ERR_STORE_INVALID_ARGUMENT");
      }
      const digest = digestOf(testBytes(100, 17));
      await expectStoreError(store.openPartial(digest, -1, { pieceSize: 64 }), "ERR_STORE_INVALID_ARGUMENT");
      await expectStoreError(store.openPartial(digest, 100, { pieceSize: 0 }), "ERR_STORE_INVALID_ARGUMENT");
      await expectStoreError(store.openPartial(digest, 100, { pieceSize: 64, mediaType: "a\nb" }), "ERR_STORE_INVALID_ARGUMENT");
      const partial = await store.openPartial(digest, 100, { pieceSize: 64 });
      await expectStoreError(partial.append(new Uint8Array(101)), "ERR_STORE_INVALID_ARGUMENT");
      await expectStoreError(partial.writePiece(0, new Uint8Array(63)), "ERR_STORE_INVALID_ARGUMENT");
      await expectStoreError(partial.writePiece(2, new Uint8Array(64)), "ERR_STORE_INVALID_ARGUMENT");
      await expectStoreError(partial.writePiece(1, new Uint8Array(64)), "ERR_STORE_INVALID_ARGUMENT"); // last piece is 36 bytes
      assert.equal(partial.state, "open", "argument errors do not fail the partial");
      assert.equal(partial.heldPieces, 0);
    }));

  it("events: added, removed, and unsubscribe", () =>
    withStore(factory, undefined, async (store) => {
      const seen: string[] = [];
      const unsubscribe = store.subscribe((event) =>
        seen.push(`${event.type}:${event.type === "added" ? event.blob.digest : event.digest}`),
      );
      store.subscribe(() => {
        throw new Error("a broken listener must not break the store");
      });
      const first = await putBlob(store, testBytes(10, 18));
      await store.delete(first.digest);
      unsubscribe();
      await putBlob(store, testBytes(10, 19));
      assert.deepEqual(seen, [`added:${first.digest}`, `removed:${first.digest}`]);
    }));

  it("close aborts open partials and refuses further calls", async () => {
    const { store, cleanup } = await factory();
    try {
      const data = testBytes(100, 20);
      const partial = await store.openPartial(digestOf(data), 100, { pieceSize: 64 });
      const reader = partial.createReadStream();
      const failed = new Promise<unknown>((resolve) => reader.once("error", resolve));
      await store.close();
      assert.equal(partial.state, "aborted");
      assert.ok(isStoreError(await failed, "ERR_STORE_CLOSED"));
      await expectStoreError(store.stat(digestOf(data)), "ERR_STORE_CLOSED");
      await expectStoreError(store.openPartial(digestOf(data), 100, { pieceSize: 64 }), "ERR_STORE_CLOSED");
      await store.close(); // idempotent
    } finally {
      await cleanup();
    }
  });
}
