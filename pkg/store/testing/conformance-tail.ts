import assert from "node:assert/strict";
import { it } from "node:test";
import { digestOf } from "../../oci/index.js";
import { isStoreError } from "../errors.js";
import { READ_CHUNK_BYTES } from "../read-chunks.js";
import {
  type BlobStoreFactory,
  Collector,
  delay,
  expectStoreError,
  putBlob,
  readAll,
  SETTLE_MS,
  stuckConsumer,
  testBytes,
  withStore,
} from "./conformance-helpers.js";

/** Readers of partial blobs, abort, resume, waiting, signals and backpressure. */
export function runTailConformance(factory: BlobStoreFactory): void {
  it("a tailing reader gets appended bytes as they arrive, and the last byte only after commit", () =>
    withStore(factory, undefined, async (store) => {
      const data = testBytes(160, 30);
      const partial = await store.openPartial(digestOf(data), data.length, { pieceSize: 16 });
      const reader = new Collector(partial.createReadStream());
      await delay(SETTLE_MS);
      assert.equal(reader.length, 0);
      for (let offset = 0; offset < data.length; offset += 7) {
        await partial.append(data.subarray(offset, offset + 7));
        const expected = Math.min(offset + 7, data.length - 1);
        await reader.waitForLength(expected);
        assert.equal(reader.length, expected, "byte-granular, and never past the written bytes");
      }
      await delay(SETTLE_MS);
      assert.equal(reader.length, data.length - 1, "the final byte waits for the verified digest");
      assert.equal(reader.ended, false);
      await partial.commit();
      await reader.waitForEnd();
      assert.deepEqual(reader.buffer(), data);
    }));

  it("a tailing reader follows out-of-order pieces piece by piece", () =>
    withStore(factory, undefined, async (store) => {
      const data = testBytes(160, 31);
      const partial = await store.openPartial(digestOf(data), data.length, { pieceSize: 16 });
      const piece = (index: number): Buffer => data.subarray(index * 16, index * 16 + 16);
      const reader = new Collector(partial.createReadStream());
      await partial.writePiece(2, piece(2));
      await partial.writePiece(1, piece(1));
      await delay(SETTLE_MS);
      assert.equal(reader.length, 0, "piece 0 is missing");
      await partial.writePiece(0, piece(0));
      await reader.waitForLength(48);
      await partial.writePiece(4, piece(4));
      await delay(SETTLE_MS);
      assert.equal(reader.length, 48);
      await partial.writePiece(3, piece(3));
      await reader.waitForLength(80);
      for (let index = 5; index < 10; index++) await partial.writePiece(index, piece(index));
      await reader.waitForLength(159);
      await delay(SETTLE_MS);
      assert.equal(reader.length, 159);
      await partial.commit();
      await reader.waitForEnd();
      assert.deepEqual(reader.buffer(), data);
    }));

  it("a range reader that stops short of the end finishes before commit; readers after commit read it all", () =>
    withStore(factory, undefined, async (store) => {
      const data = testBytes(100, 32);
      const partial = await store.openPartial(digestOf(data), data.length, { pieceSize: 16 });
      const head = new Collector(partial.createReadStream({ start: 10, end: 49 }));
      const tail = new Collector(partial.createReadStream({ start: 90 }));
      await partial.append(data);
      await head.waitForEnd();
      assert.deepEqual(head.buffer(), data.subarray(10, 50));
      await tail.waitForLength(9);
      await delay(SETTLE_MS);
      assert.equal(tail.ended, false);
      await partial.commit();
      await tail.waitForEnd();
      assert.deepEqual(tail.buffer(), data.subarray(90));
      assert.deepEqual(await readAll(partial.createReadStream()), data, "a reader created after commit reads the complete blob");
    }));

  it("abort wakes readers and waiters with the reason and makes nothing visible", () =>
    withStore(factory, undefined, async (store) => {
      const data = testBytes(100, 33);
      const digest = digestOf(data);
      const partial = await store.openPartial(digest, data.length, { pieceSize: 16 });
      await partial.append(data.subarray(0, 20));
      const reader = new Collector(partial.createReadStream());
      await reader.waitForLength(20);
      const reason = new Error("origin went away");
      const waiting = assert.rejects(partial.waitForPiece(3), (error: unknown) => error === reason);
      await partial.abort(reason);
      assert.equal(await reader.waitForError(), reason);
      await waiting;
      await assert.rejects(partial.waitForPiece(4), (error: unknown) => error === reason);
      assert.equal(partial.state, "aborted");
      await expectStoreError(partial.append(data.subarray(20)), "ERR_STORE_ABORTED");
      assert.equal(await store.stat(digest), undefined);
      assert.deepEqual(await store.listPartials(), []);
      const late = new Collector(partial.createReadStream());
      assert.equal(await late.waitForError(), reason, "a reader created after the abort fails too");
      const fresh = await store.openPartial(digest, data.length, { pieceSize: 16 });
      assert.notEqual(fresh, partial);
      assert.equal(fresh.heldPieces, 0);
    }));

  it("abort with keepData lets a later openPartial resume pieces and appendOffset", () =>
    withStore(factory, undefined, async (store) => {
      const data = testBytes(160, 34);
      const digest = digestOf(data);
      const partial = await store.openPartial(digest, data.length, { pieceSize: 16 });
      await partial.append(data.subarray(0, 40));
      await partial.writePiece(6, data.subarray(96, 112));
      await partial.abort(new Error("shutting down"), { keepData: true });
      assert.equal(store.usage().partials, 0);
      const listed = (await store.listPartials()).find((p) => p.digest === digest);
      assert.ok(listed, "a kept partial is listed");
      assert.equal(Buffer.from(listed.bitmap).toString("hex"), "c200");
      const resumed = await store.openPartial(digest, data.length, { pieceSize: 16 });
      assert.equal(resumed.heldPieces, 3);
      assert.equal(resumed.appendOffset, 40);
      assert.equal(resumed.hasPiece(6), true);
      await resumed.append(data.subarray(40));
      await resumed.commit();
      assert.deepEqual(await readAll(await store.createReadStream(digest)), data);
    }));

  it("a reader of a partial that fails verification never gets the last byte", () =>
    withStore(factory, undefined, async (store) => {
      const data = testBytes(64, 35);
      const partial = await store.openPartial(digestOf(testBytes(64, 36)), data.length, { pieceSize: 16 });
      const reader = new Collector(partial.createReadStream());
      await partial.append(data);
      await reader.waitForLength(63);
      const error = await expectStoreError(partial.commit(), "ERR_STORE_DIGEST_MISMATCH");
      assert.equal(await reader.waitForError(), error);
      assert.equal(reader.length, 63);
    }));

  it("a reader of the zero-byte partial ends only after commit", () =>
    withStore(factory, undefined, async (store) => {
      const partial = await store.openPartial(digestOf(new Uint8Array(0)), 0, { pieceSize: 16 });
      const reader = new Collector(partial.createReadStream());
      await delay(SETTLE_MS);
      assert.equal(reader.ended, false);
      await partial.commit();
      await reader.waitForEnd();
      assert.equal(reader.length, 0);
    }));

  it("waitForPiece resolves when the piece arrives and rejects when its signal fires", () =>
    withStore(factory, undefined, async (store) => {
      const data = testBytes(64, 37);
      const partial = await store.openPartial(digestOf(data), data.length, { pieceSize: 16 });
      let resolved = false;
      const waiting = partial.waitForPiece(2).then(() => {
        resolved = true;
      });
      await partial.writePiece(1, data.subarray(16, 32));
      await delay(SETTLE_MS);
      assert.equal(resolved, false);
      await partial.writePiece(2, data.subarray(32, 48));
      await waiting;
      const controller = new AbortController();
      const cancelled = partial.waitForPiece(3, controller.signal);
      controller.abort();
      await expectStoreError(cancelled, "ERR_STORE_ABORTED");
      await expectStoreError(partial.waitForPiece(4), "ERR_STORE_INVALID_ARGUMENT");
      await partial.waitForPiece(1); // already held
    }));

  it("read streams honour their AbortSignal", () =>
    withStore(factory, undefined, async (store) => {
      const data = testBytes(64, 38);
      const { digest } = await putBlob(store, data);
      const blobController = new AbortController();
      const blobReader = new Collector(await store.createReadStream(digest, { signal: blobController.signal, start: 1 }));
      blobReader.stream.pause();
      blobController.abort(new Error("client left"));
      assert.ok(isStoreError(await blobReader.waitForError(), "ERR_STORE_ABORTED"));
      const aborted = new AbortController();
      aborted.abort();
      await expectStoreError(store.createReadStream(digest, { signal: aborted.signal }), "ERR_STORE_ABORTED");

      const partial = await store.openPartial(digestOf(testBytes(64, 39)), 64, { pieceSize: 16 });
      const tailController = new AbortController();
      const tailReader = new Collector(partial.createReadStream({ signal: tailController.signal }));
      tailController.abort();
      assert.ok(isStoreError(await tailReader.waitForError(), "ERR_STORE_ABORTED"));
      assert.equal(partial.state, "open", "a reader's signal does not abort the partial");
    }));

  it("readers honour backpressure: a stalled consumer does not make them read ahead", () =>
    withStore(factory, undefined, async (store) => {
      // Several times the readers' buffer, so reading ahead would show.
      const size = 8 * READ_CHUNK_BYTES;
      const data = testBytes(size, 40);
      const { digest } = await putBlob(store, data, { pieceSize: 1024 * 1024 });
      const blobStream = await store.createReadStream(digest);
      const blobConsumer = stuckConsumer(blobStream);
      const partialData = testBytes(size, 41);
      const partial = await store.openPartial(digestOf(partialData), size, { pieceSize: 1024 * 1024 });
      await partial.append(partialData);
      const tailStream = partial.createReadStream();
      const tailConsumer = stuckConsumer(tailStream);
      await delay(SETTLE_MS * 2);
      assert.ok(
        blobConsumer.pulledBytes() > 0 && blobConsumer.pulledBytes() < size / 4,
        `blob reader pulled ${blobConsumer.pulledBytes()}`,
      );
      assert.ok(
        tailConsumer.pulledBytes() > 0 && tailConsumer.pulledBytes() < size / 4,
        `tail reader pulled ${tailConsumer.pulledBytes()}`,
      );
      blobStream.destroy();
      tailStream.destroy();
    }));
}
