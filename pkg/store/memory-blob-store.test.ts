import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { digestOf } from "../oci/index.js";
import { isStoreError } from "./errors.js";
import { MemoryBlobStore } from "./memory-blob-store.js";
import { runBlobStoreConformance } from "./testing/conformance.js";
import { readAll, testBytes } from "./testing/conformance-helpers.js";

runBlobStoreConformance("MemoryBlobStore", (options) => {
  const store = new MemoryBlobStore(options);
  return Promise.resolve({ store, cleanup: () => store.close() });
});

runBlobStoreConformance("MemoryBlobStore hashing in a worker", (options) => {
  const store = new MemoryBlobStore({ ...options, hashWorkerMinBytes: 0, hashAllInWorker: true });
  return Promise.resolve({ store, cleanup: () => store.close() });
});

describe("MemoryBlobStore", () => {
  it("works without options (unlimited quota)", async () => {
    const store = new MemoryBlobStore();
    assert.equal(store.usage().quotaBytes, 0);
    await store.close();
  });

  it("rejects invalid watermarks", () => {
    for (const options of [{ highWatermark: 1.5 }, { lowWatermark: 0 }, { highWatermark: 0.5, lowWatermark: 0.6 }, { quotaBytes: -1 }]) {
      assert.throws(
        () => new MemoryBlobStore(options),
        (error: unknown) => isStoreError(error, "ERR_STORE_INVALID_ARGUMENT"),
      );
    }
  });

  it("hands out copies: a consumer mutating its chunk does not change the blob", async () => {
    const store = new MemoryBlobStore();
    const data = testBytes(100);
    const digest = digestOf(data);
    const partial = await store.openPartial(digest, 100, { pieceSize: 64 });
    await partial.append(data);
    await partial.commit();
    for await (const chunk of await store.createReadStream(digest)) (chunk as Buffer).fill(0);
    assert.deepEqual(await readAll(await store.createReadStream(digest)), data);
    await store.close();
  });
});
