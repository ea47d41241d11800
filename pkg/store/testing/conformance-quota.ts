import assert from "node:assert/strict";
import { once } from "node:events";
import { it } from "node:test";
import { digestOf } from "../../oci/index.js";
import type { BlobStore, StoreEvent } from "../blob-store.js";
import { type BlobStoreFactory, expectStoreError, putBlob, readAll, recordEvents, testBytes, withStore } from "./conformance-helpers.js";

/** Quota reservation, LRU eviction between watermarks, and pinning. */
export function runQuotaConformance(factory: BlobStoreFactory): void {
  it("evicts least-recently-used, unpinned blobs down to the low watermark", async () => {
    let time = 0;
    await withStore(factory, { quotaBytes: 1000, highWatermark: 0.9, lowWatermark: 0.8, now: () => time }, async (store) => {
      const events = recordEvents(store);
      const at = async <T>(moment: number, action: () => Promise<T>): Promise<T> => {
        time = moment;
        return action();
      };
      const a = await at(1, () => putBlob(store, testBytes(200, 50)));
      const b = await at(2, () => putBlob(store, testBytes(200, 51)));
      const c = await at(3, () => putBlob(store, testBytes(200, 52)));
      // C is opened (pinned) early, so it stays the least recently used blob that is still in use.
      const pinnedStream = await at(3.5, () => store.createReadStream(c.digest));
      await at(4, async () => readAll(await store.createReadStream(a.digest)));
      const dData = testBytes(250, 53);
      const d = await at(5, () => putBlob(store, dData));
      assert.equal(store.usage().usedBytes, 850, "850 <= high watermark 900: nothing evicted yet");
      assert.equal((await store.list()).length, 4);

      // 950 > 900: evict to <= 800. LRU order is B(2), C(3.5, pinned), A(4), D(5): B goes.
      const e = await at(6, () => store.openPartial(digestOf(testBytes(100, 54)), 100, { pieceSize: 64 }));
      assert.equal(await store.stat(b.digest), undefined);
      assert.deepEqual(await present(store, [a.digest, c.digest, d.digest]), [true, true, true]);
      assert.equal(store.usage().usedBytes, 750);

      // 950 again: C is older but pinned, so A goes.
      const f = await at(7, () => store.openPartial(digestOf(testBytes(200, 55)), 200, { pieceSize: 64 }));
      assert.equal(await store.stat(a.digest), undefined);
      assert.deepEqual(await present(store, [c.digest, d.digest]), [true, true]);
      assert.deepEqual(removals(events), [
        { digest: b.digest, reason: "evicted" },
        { digest: a.digest, reason: "evicted" },
      ]);

      // 750 + 600 can only fit by evicting C, which is pinned: refused, and D is not evicted for nothing.
      await at(8, () =>
        expectStoreError(store.openPartial(digestOf(testBytes(600, 56)), 600, { pieceSize: 64 }), "ERR_STORE_QUOTA_EXCEEDED"),
      );
      assert.deepEqual(await present(store, [c.digest, d.digest]), [true, true]);
      assert.equal(removals(events).length, 2);

      pinnedStream.destroy();
      await once(pinnedStream, "close");
      await e.abort(new Error("test done"));
      await f.abort(new Error("test done"));
      assert.deepEqual(store.usage(), { usedBytes: 450, quotaBytes: 1000, blobs: 2, partials: 0 });
      assert.deepEqual(await readAll(await store.createReadStream(d.digest)), dData);
    });
  });

  it("a reservation that overflows the quota evicts first, then fits", async () => {
    let time = 0;
    await withStore(factory, { quotaBytes: 1000, highWatermark: 0.9, lowWatermark: 0.5, now: () => ++time }, async (store) => {
      const a = await putBlob(store, testBytes(400, 60));
      const b = await putBlob(store, testBytes(400, 61));
      const data = testBytes(450, 62);
      const partial = await store.openPartial(digestOf(data), data.length, { pieceSize: 64 });
      // 1250 > 1000 must evict; eviction then goes down to the low watermark (500), so both A and B go.
      assert.equal(await store.stat(a.digest), undefined);
      assert.equal(await store.stat(b.digest), undefined);
      assert.equal(store.usage().usedBytes, 450);
      await partial.append(data);
      await partial.commit();
      assert.equal(store.usage().usedBytes, 450);
      await expectStoreError(store.openPartial(digestOf(testBytes(1001, 63)), 1001, { pieceSize: 64 }), "ERR_STORE_QUOTA_EXCEEDED");
      assert.equal(store.usage().usedBytes, 450, "a refused reservation reserves nothing");
    });
  });

  it("never evicts a blob that has an open read stream", async () => {
    await withStore(factory, { quotaBytes: 1000, highWatermark: 0.9, lowWatermark: 0.8 }, async (store) => {
      const data = testBytes(800, 64);
      const { digest } = await putBlob(store, data);
      const reader = await store.createReadStream(digest, { start: 0, end: 99 });
      await expectStoreError(store.openPartial(digestOf(testBytes(300, 65)), 300, { pieceSize: 64 }), "ERR_STORE_QUOTA_EXCEEDED");
      assert.deepEqual(await readAll(reader), data.subarray(0, 100));
      // Once the reader is done, the same reservation evicts the blob.
      const partial = await store.openPartial(digestOf(testBytes(300, 65)), 300, { pieceSize: 64 });
      assert.equal(await store.stat(digest), undefined);
      assert.equal(partial.state, "open");
    });
  });
}

async function present(store: BlobStore, digests: readonly string[]): Promise<boolean[]> {
  const list = new Set((await store.list()).map((info) => info.digest as string));
  return digests.map((digest) => list.has(digest));
}

function removals(events: readonly StoreEvent[]): { digest: string; reason: string }[] {
  return events.flatMap((event) => (event.type === "removed" ? [{ digest: event.digest, reason: event.reason }] : []));
}
