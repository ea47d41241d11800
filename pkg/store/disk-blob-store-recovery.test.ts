import assert from "node:assert/strict";
import { access, utimes } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { type Digest, digestHex } from "../oci/index.js";
import type { StoreEvent } from "./blob-store.js";
import { isStoreError } from "./errors.js";
import { Collector, putBlob, readAll, recordEvents, testBytes } from "./testing/conformance-helpers.js";
import { openStore, removeTempDirs, scribble, tempDir } from "./testing/disk-helpers.js";

after(removeTempDirs);

/** More than one read chunk, so a reader would have streamed most of the blob before the end. */
const BLOB_BYTES = 600 * 1024;
const PIECE_BYTES = 64 * 1024;

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

function nextEvent(
  store: { subscribe(listener: (event: StoreEvent) => void): () => void },
  match: (event: StoreEvent) => boolean,
): Promise<StoreEvent> {
  return new Promise((resolve) => {
    const unsubscribe = store.subscribe((event) => {
      if (!match(event)) return;
      unsubscribe();
      resolve(event);
    });
  });
}

describe("DiskBlobStore recovery", () => {
  it("a corrupted blob found at start-up is never served completely, and is removed", async () => {
    const dir = await tempDir();
    const first = await openStore(dir);
    const whole = await putBlob(first, testBytes(BLOB_BYTES, 1), { pieceSize: PIECE_BYTES });
    const ranged = await putBlob(first, testBytes(BLOB_BYTES, 2), { pieceSize: PIECE_BYTES });
    await first.close();
    const path = (digest: Digest): string => join(dir, "blobs", "sha256", digestHex(digest));
    await scribble(path(whole.digest), 400 * 1024);
    await scribble(path(ranged.digest), BLOB_BYTES - 1);

    const store = await openStore(dir); // background verification far in the future
    const events = recordEvents(store);
    assert.deepEqual(await store.stat(whole.digest), whole, "visible at once, before verification");

    const removed = nextEvent(store, (event) => event.type === "removed");
    const reader = new Collector(await store.createReadStream(whole.digest));
    const error = await reader.waitForError();
    assert.ok(isStoreError(error, "ERR_STORE_DIGEST_MISMATCH"));
    assert.ok(reader.length < BLOB_BYTES, `got ${reader.length} bytes`);
    assert.equal(await store.stat(whole.digest), undefined, "gone from the index as soon as the mismatch is known");
    await removed;
    assert.deepEqual(events, [{ type: "removed", digest: whole.digest, reason: "corrupt" }]);
    assert.equal(await exists(path(whole.digest)), false);

    // A range that stops short of the corrupt byte still fails: the whole blob is checked (once, shared
    // by concurrent range readers) before any range of it is served.
    const rangedRemoved = nextEvent(store, (event) => event.type === "removed" && event.digest === ranged.digest);
    const attempts = await Promise.allSettled([0, 1, 2].map(() => store.createReadStream(ranged.digest, { start: 10, end: 109 })));
    for (const attempt of attempts) assert.ok(attempt.status === "rejected" && isStoreError(attempt.reason, "ERR_STORE_DIGEST_MISMATCH"));
    assert.equal(await store.stat(ranged.digest), undefined);
    await rangedRemoved;
    assert.equal(await exists(path(ranged.digest)), false);
    await store.close();
  });

  it("an intact blob found at start-up is served in full, ranges too", async () => {
    const dir = await tempDir();
    const data = testBytes(BLOB_BYTES, 3);
    const first = await openStore(dir);
    const info = await putBlob(first, data, { pieceSize: PIECE_BYTES });
    await first.close();
    const store = await openStore(dir);
    assert.deepEqual(await readAll(await store.createReadStream(info.digest, { start: 1000, end: 299_999 })), data.subarray(1000, 300_000));
    assert.deepEqual(await readAll(await store.createReadStream(info.digest)), data);
    await store.close();
  });

  it("the background verifier removes corrupt blobs and keeps intact ones", async () => {
    const dir = await tempDir();
    const first = await openStore(dir);
    const good = await putBlob(first, testBytes(BLOB_BYTES, 4), { pieceSize: PIECE_BYTES });
    const bad = await putBlob(first, testBytes(BLOB_BYTES, 5), { pieceSize: PIECE_BYTES });
    await first.close();
    await scribble(join(dir, "blobs", "sha256", digestHex(bad.digest)), 7);

    const store = await openStore(dir, { verifyStartDelayMs: 20 });
    const removed = await nextEvent(store, (event) => event.type === "removed");
    assert.deepEqual(removed, { type: "removed", digest: bad.digest, reason: "corrupt" });
    assert.deepEqual(await store.list(), [good]);
    assert.deepEqual(await readAll(await store.createReadStream(good.digest)), testBytes(BLOB_BYTES, 4));
    await store.close();
  });

  it("at start-up, file mtimes order eviction, and a lowered quota is enforced", async () => {
    const dir = await tempDir();
    const first = await openStore(dir);
    const a = await putBlob(first, testBytes(300, 6));
    const b = await putBlob(first, testBytes(300, 7));
    const c = await putBlob(first, testBytes(300, 8));
    await first.close();
    const setUse = (digest: Digest, seconds: number): Promise<void> =>
      utimes(join(dir, "blobs", "sha256", digestHex(digest)), seconds, seconds);
    await setUse(a.digest, 2000);
    await setUse(b.digest, 3000);
    await setUse(c.digest, 1000);

    // 900 bytes > 800 (high): evict down to 500, oldest first: C, then A.
    const store = await openStore(dir, { quotaBytes: 1000, highWatermark: 0.8, lowWatermark: 0.5 });
    assert.deepEqual(await store.list(), [b]);
    assert.equal(store.usage().usedBytes, 300);
    await store.close();
  });
});
