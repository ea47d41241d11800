import assert from "node:assert/strict";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { digestOf } from "../oci/index.js";
import { choosePieceSize, MIN_PIECE_SIZE_BYTES, pieceSpan, sha256Of } from "../piece/index.js";
import type { StoreEvent } from "./blob-store.js";
import { CompositeBlobStore } from "./composite-blob-store.js";
import { ExternalPieceHashes } from "./external-piece-hashes.js";
import { MemoryBlobStore } from "./memory-blob-store.js";
import { runBlobStoreConformance } from "./testing/conformance.js";
import { expectStoreError, putBlob, readAll, testBytes } from "./testing/conformance-helpers.js";
import { MemoryExternalSource } from "./testing/memory-external-source.js";

runBlobStoreConformance("CompositeBlobStore (MemoryBlobStore, empty external source)", async (options) => {
  const store = await CompositeBlobStore.open({
    own: new MemoryBlobStore(options),
    external: new MemoryExternalSource(),
    pieceHashes: await ExternalPieceHashes.open(),
  });
  return { store, cleanup: () => store.close() };
});

interface Fixture {
  readonly store: CompositeBlobStore;
  readonly own: MemoryBlobStore;
  readonly external: MemoryExternalSource;
  readonly events: string[];
  served: number;
  dropped: number;
}

async function open(options: { dir?: string; external?: MemoryExternalSource } = {}): Promise<Fixture> {
  const own = new MemoryBlobStore();
  const external = options.external ?? new MemoryExternalSource();
  const fixture = { own, external, events: [] as string[], served: 0, dropped: 0 } as { -readonly [K in keyof Fixture]: Fixture[K] };
  fixture.store = await CompositeBlobStore.open({
    own,
    external,
    pieceHashes: await ExternalPieceHashes.open({ dir: options.dir }),
    onExternalBytes: (bytes) => {
      fixture.served += bytes;
    },
    onOwnCopyDropped: () => {
      fixture.dropped++;
    },
  });
  fixture.store.subscribe((event: StoreEvent) =>
    fixture.events.push(`${event.type}:${event.type === "added" ? event.blob.digest : event.digest}`),
  );
  return fixture;
}

function expectedHashes(data: Buffer): Buffer[] {
  const pieceSize = choosePieceSize(data.length);
  const hashes: Buffer[] = [];
  for (let start = 0, index = 0; start < data.length; start += pieceSize, index++) {
    const span = pieceSpan(index, data.length, pieceSize);
    hashes.push(sha256Of(data.subarray(span.start, span.end)));
  }
  return hashes;
}

describe("CompositeBlobStore", () => {
  const big = testBytes(2 * MIN_PIECE_SIZE_BYTES + 777, 71);

  it("serves an external blob at once and announces it once its piece hashes are computed", async () => {
    const f = await open();
    try {
      const [blob] = f.external.add(big);
      assert.ok(blob);
      assert.deepEqual(await f.store.stat(blob.digest), { digest: blob.digest, size: big.length });
      assert.deepEqual(
        await readAll(await f.store.createReadStream(blob.digest, { start: 10, end: 1_500_000 })),
        big.subarray(10, 1_500_001),
      );
      const reader = await f.store.openReader(blob.digest);
      const target = Buffer.alloc(100);
      await reader.read(target, big.length - 100);
      await reader.close();
      assert.deepEqual(target, big.subarray(big.length - 100));
      assert.equal(f.served, 1_500_000 - 10 + 1 + 100, "bytes read for clients are counted, hashing is not");
      await f.store.idle();
      assert.deepEqual(f.events, [`added:${blob.digest}`]);
      assert.deepEqual(await f.store.list(), [{ digest: blob.digest, size: big.length }]);
      const hashes = await f.store.pieceHashes(blob.digest);
      assert.deepEqual(
        hashes?.hashes.map((h) => Buffer.from(h)),
        expectedHashes(big),
      );
      assert.equal(f.external.openReaders, 0, "every reader was closed");
      assert.deepEqual(f.store.usage(), { usedBytes: 0, quotaBytes: 0, blobs: 0, partials: 0 }, "usage counts only the agent's store");
      assert.deepEqual(f.store.externalUsage(), { blobs: 1, bytes: big.length, advertisedBlobs: 1, hashingBlobs: 0 });
      await expectStoreError(f.store.createReadStream(blob.digest, { start: 0, end: big.length }), "ERR_STORE_INVALID_ARGUMENT");
      await expectStoreError(f.store.openPartial(blob.digest, big.length, { pieceSize: MIN_PIECE_SIZE_BYTES }), "ERR_STORE_BLOB_EXISTS");
    } finally {
      await f.store.close();
    }
    assert.equal(f.external.closed, true, "closing the store closes the source");
  });

  it("drops the agent's copy once the runtime holds the blob, hands its piece hashes over, and stays announced throughout", async () => {
    const f = await open();
    try {
      const info = await putBlob(f.store, big, { pieceSize: choosePieceSize(big.length) });
      const manifest = await putBlob(f.store, Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'), {
        mediaType: "application/vnd.oci.image.manifest.v1+json",
      });
      f.external.add(big, Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'));
      await f.store.idle();
      assert.equal(await f.own.stat(info.digest), undefined, "the layer is in the runtime's store only");
      assert.equal(f.dropped, 1);
      assert.ok(await f.own.stat(manifest.digest), "the manifest stays: its media type is the agent's to know");
      assert.deepEqual(f.events, [`added:${info.digest}`, `added:${manifest.digest}`], "no withdraw and re-announce");
      assert.equal(f.external.bytesRead, 0, "the piece hashes came from the agent's store, not from hashing the runtime's copy");
      assert.deepEqual(
        (await f.store.pieceHashes(info.digest))?.hashes.map((h) => Buffer.from(h)),
        expectedHashes(big),
      );
      assert.deepEqual((await f.store.list()).map((b) => b.digest).sort(), [info.digest, manifest.digest].sort());
      assert.deepEqual(await readAll(await f.store.createReadStream(info.digest)), big);
      assert.equal(f.store.usage().usedBytes, manifest.size);

      f.external.remove(info.digest);
      await f.store.idle();
      assert.deepEqual(f.events.at(-1), `removed:${info.digest}`);
      assert.equal(await f.store.stat(info.digest), undefined);
      assert.equal(await f.store.pieceHashes(info.digest), undefined);
    } finally {
      await f.store.close();
    }
  });

  it("a blob the agent stores after the runtime has it is dropped too; one removed from the agent's store stays announced", async () => {
    const f = await open();
    try {
      const [blob] = f.external.add(big);
      assert.ok(blob);
      await f.store.idle();
      // The agent fetched it before the runtime committed (e.g. a prefetch): it lands in its own store.
      await putBlob(f.own, big, { pieceSize: choosePieceSize(big.length) });
      await f.store.idle();
      assert.equal(await f.own.stat(blob.digest), undefined);
      assert.deepEqual(f.events, [`added:${blob.digest}`], "one announcement while the copies came and went");
    } finally {
      await f.store.close();
    }
  });

  it("hashes a blob someone asks for at once, and remembers the hashes across restarts in its directory", async () => {
    const dir = await mkdtemp(join(tmpdir(), "shoal-composite-"));
    try {
      const external = new MemoryExternalSource();
      const [blob] = external.add(big);
      assert.ok(blob);
      const first = await open({ dir, external });
      const hashes = await first.store.pieceHashes(blob.digest);
      assert.deepEqual(
        hashes?.hashes.map((h) => Buffer.from(h)),
        expectedHashes(big),
      );
      await first.store.idle();
      assert.deepEqual(first.events, [`added:${blob.digest}`]);
      const readsBefore = external.bytesRead;
      await first.store.close();

      external.closed = false;
      const second = await open({ dir, external });
      try {
        await second.store.idle();
        assert.deepEqual(await second.store.list(), [{ digest: blob.digest, size: big.length }]);
        assert.equal(external.bytesRead, readsBefore, "announced from the recorded hashes, without reading the blob again");
        external.remove(blob.digest);
        await second.store.idle();
        assert.deepEqual(await readdir(join(dir, "sha256")), [], "the record of a removed blob is deleted");
      } finally {
        await second.store.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a blob removed while it is hashed is not announced", async () => {
    const external = new MemoryExternalSource();
    const f = await open({ external });
    try {
      const data = testBytes(5000, 72);
      const [blob] = external.add(data);
      assert.ok(blob);
      external.remove(blob.digest);
      await f.store.idle();
      assert.deepEqual(f.events, []);
      assert.deepEqual(await f.store.list(), []);
      assert.equal(await f.store.stat(digestOf(data)), undefined);
      await expectStoreError(f.store.openReader(blob.digest), "ERR_STORE_BLOB_NOT_FOUND");
    } finally {
      await f.store.close();
    }
  });
});
