import assert from "node:assert/strict";
import { cp, mkdir, readdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { type Digest, digestHex, digestOf } from "../oci/index.js";
import { MIN_PIECE_SIZE_BYTES, sha256Of } from "../piece/index.js";
import { isStoreError } from "./errors.js";
import { runBlobStoreConformance } from "./testing/conformance.js";
import { withNewHashThread } from "./testing/hash-thread.js";
import { delay, expectStoreError, putBlob, readAll, testBytes } from "./testing/conformance-helpers.js";
import { openStore, removeTempDirs, scribble, stateOf, TEST_SAVE_INTERVAL_MS, tempDir } from "./testing/disk-helpers.js";

after(removeTempDirs);

runBlobStoreConformance("DiskBlobStore", async (options) => {
  const dir = await tempDir();
  const store = await openStore(dir, options ?? {});
  return { store, cleanup: () => store.close() };
});

// Every partial hashes in the hash worker thread (by default only large ones do).
runBlobStoreConformance("DiskBlobStore hashing in a worker", async (options) => {
  const dir = await tempDir();
  const store = await openStore(dir, { ...options, hashWorkerMinBytes: 0, hashAllInWorker: true });
  return { store, cleanup: () => store.close() };
});

describe("DiskBlobStore", () => {
  it("while the hash thread starts, appended pieces are held at once; the digest catches up from storage once it runs", async () => {
    // The partial's hash thread is a new one, and counts as started only when the test says so.
    await withNewHashThread(true, async (threads) => {
      const store = await openStore(await tempDir(), { hashWorkerMinBytes: 0, hashAllInWorker: true });
      const pieceSize = MIN_PIECE_SIZE_BYTES;
      const data = testBytes(3 * pieceSize + 100);
      const digest = digestOf(data);
      const partial = await store.openPartial(digest, data.length, { pieceSize });
      // Bounded, so that a partial that waits for the held thread fails here instead of hanging.
      const appended = await Promise.race([
        partial.append(data.subarray(0, pieceSize + 10)).then(() => "appended"),
        delay(30_000, "waited", { ref: false }),
      ]);
      assert.equal(appended, "appended", "the append did not wait for the thread");
      const online = (): boolean => threads.online;
      assert.equal(online(), false);
      assert.equal(partial.heldPieces, 1);
      assert.deepEqual(partial.pieceHash(0), sha256Of(data.subarray(0, pieceSize)));
      threads.releaseStart();
      await partial.append(data.subarray(pieceSize + 10));
      const info = await partial.commit();
      assert.equal(info.digest, digest);
      for (let index = 1; index < 4; index++)
        assert.deepEqual(partial.pieceHash(index), sha256Of(data.subarray(index * pieceSize, (index + 1) * pieceSize)));
      assert.deepEqual(await readAll(await store.createReadStream(digest)), data);
      await store.close();
    });
  });

  it("a hash thread that dies while it starts fails its partials (ERR_STORE_IO); the next partial starts a new one", async () => {
    // The partial's hash thread is a new one, and counts as started only when the test says so.
    await withNewHashThread(true, async (threads) => {
      const store = await openStore(await tempDir(), { hashWorkerMinBytes: 0, hashAllInWorker: true });
      const pieceSize = MIN_PIECE_SIZE_BYTES;
      const data = testBytes(2 * pieceSize);
      const partial = await store.openPartial(digestOf(data), data.length, { pieceSize });
      await partial.append(data.subarray(0, pieceSize + 10));
      assert.equal(partial.heldPieces, 1, "held before the thread ran");
      await threads.kill();
      // The catch-up that waited for the thread finds it gone and fails the partial: the caller is told why
      // (ERR_STORE_IO, or ERR_STORE_ABORTED caused by it when the catch-up failed first).
      await assert.rejects(
        partial.append(data.subarray(pieceSize + 10)).then(() => partial.commit()),
        (error: unknown) => {
          const io = isStoreError(error, "ERR_STORE_IO") ? error : isStoreError(error, "ERR_STORE_ABORTED") ? error.cause : undefined;
          return isStoreError(io, "ERR_STORE_IO") && /hash worker thread stopped/.test(io.message);
        },
      );
      assert.equal(partial.state, "aborted");
      threads.releaseStart();
      const next = await store.openPartial(digestOf(data), data.length, { pieceSize });
      await next.append(data);
      assert.equal((await next.commit()).digest, digestOf(data));
      await store.close();
    });
  });

  it("a partial whose bytes do not match its digest is refused when the hash thread started late", async () => {
    // The partial's hash thread is a new one, and counts as started only when the test says so.
    await withNewHashThread(true, async (threads) => {
      const store = await openStore(await tempDir(), { hashWorkerMinBytes: 0, hashAllInWorker: true });
      const data = testBytes(2 * MIN_PIECE_SIZE_BYTES);
      const partial = await store.openPartial(digestOf(Buffer.from("other")), data.length, { pieceSize: MIN_PIECE_SIZE_BYTES });
      await partial.append(data);
      threads.releaseStart();
      await expectStoreError(partial.commit(), "ERR_STORE_DIGEST_MISMATCH");
      await store.close();
    });
  });

  it("lays out blobs by digest, with a media-type sidecar only when there is one", async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    const mediaType = "application/vnd.oci.image.index.v1+json";
    const manifest = await putBlob(store, Buffer.from('{"manifests":[]}'), { mediaType });
    const layer = await putBlob(store, testBytes(300), { algorithm: "sha512" });
    await store.close();
    assert.deepEqual((await readdir(join(dir, "blobs", "sha256"))).sort(), [
      digestHex(manifest.digest),
      `${digestHex(manifest.digest)}.meta`,
    ]);
    assert.deepEqual(await readdir(join(dir, "blobs", "sha512")), [digestHex(layer.digest)]);
    assert.deepEqual(await readFile(join(dir, "blobs", "sha512", digestHex(layer.digest))), testBytes(300));
    assert.deepEqual(await readdir(join(dir, "partial", "sha256")), []);
    assert.deepEqual(await readdir(join(dir, "tmp")), []);
    const reopened = await openStore(dir);
    assert.deepEqual(await reopened.stat(manifest.digest), manifest);
    assert.deepEqual(await reopened.stat(layer.digest), { digest: layer.digest, size: 300 });
    await reopened.close();
  });

  it("keeps piece hashes in a .pieces sidecar across restarts, recomputes them when it is corrupt, and removes it with the blob", async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    const data = testBytes(MIN_PIECE_SIZE_BYTES + 100, 7);
    const info = await putBlob(store, data, { pieceSize: MIN_PIECE_SIZE_BYTES });
    const sidecar = join(dir, "blobs", "sha256", `${digestHex(info.digest)}.pieces`);
    const expected = [sha256Of(data.subarray(0, MIN_PIECE_SIZE_BYTES)), sha256Of(data.subarray(MIN_PIECE_SIZE_BYTES))];
    assert.equal((await readFile(sidecar)).length, 4 + 2 * 32, "written at commit");
    await store.close();
    const reopened = await openStore(dir);
    assert.deepEqual(
      (await reopened.pieceHashes(info.digest))?.hashes.map((h) => Buffer.from(h)),
      expected,
    );
    await writeFile(sidecar, Buffer.from("garbage"));
    assert.deepEqual(
      (await reopened.pieceHashes(info.digest))?.hashes.map((h) => Buffer.from(h)),
      expected,
      "recomputed from the blob",
    );
    assert.equal((await readFile(sidecar)).length, 4 + 2 * 32, "and recorded again");
    await reopened.delete(info.digest);
    assert.deepEqual(await readdir(join(dir, "blobs", "sha256")), []);
    await reopened.close();
  });

  it("resumes a partial after close and reopen: appendOffset and heldPieces survive", async () => {
    const dir = await tempDir();
    const data = testBytes(160, 2);
    const digest = digestOf(data);
    const first = await openStore(dir);
    const partial = await first.openPartial(digest, data.length, { pieceSize: 16, mediaType: "application/x-test" });
    await partial.append(data.subarray(0, 40));
    await partial.writePiece(6, data.subarray(96, 112));
    await first.close();
    assert.equal(partial.state, "aborted");

    const second = await openStore(dir);
    const listed = await second.listPartials();
    assert.equal(listed.length, 1);
    assert.equal(Buffer.from(listed[0]!.bitmap).toString("hex"), "c200");
    const resumed = await second.openPartial(digest, data.length, { pieceSize: 16 });
    assert.equal(resumed.heldPieces, 3);
    assert.equal(resumed.appendOffset, 40);
    assert.equal(resumed.mediaType, "application/x-test");
    await resumed.append(data.subarray(40));
    // The hash of the resumed prefix comes from the bytes already on disk: commit verifies all of it.
    assert.deepEqual(await resumed.commit(), { digest, size: 160, mediaType: "application/x-test" });
    assert.deepEqual(await readAll(await second.createReadStream(digest)), data);
    await second.close();
  });

  it("a resumed partial with another size or piece size starts over", async () => {
    const dir = await tempDir();
    const data = testBytes(160, 3);
    const digest = digestOf(data);
    const first = await openStore(dir);
    await (await first.openPartial(digest, data.length, { pieceSize: 16 })).append(data.subarray(0, 64));
    await first.close();
    const second = await openStore(dir);
    const fresh = await second.openPartial(digest, data.length, { pieceSize: 32 });
    assert.equal(fresh.heldPieces, 0);
    assert.equal(fresh.appendOffset, 0);
    await second.close();
  });

  it("state saved while running lets a killed process resume (copy of a live directory)", async () => {
    const dir = await tempDir();
    const data = testBytes(160, 4);
    const digest = digestOf(data);
    const store = await openStore(dir);
    const partial = await store.openPartial(digest, data.length, { pieceSize: 16 });
    await partial.append(data.subarray(0, 40));
    await partial.writePiece(6, data.subarray(96, 112));
    await delay(TEST_SAVE_INTERVAL_MS * 10);
    const crashed = await tempDir();
    await cp(dir, crashed, { recursive: true });
    await store.close();

    const recovered = await openStore(crashed);
    const resumed = await recovered.openPartial(digest, data.length, { pieceSize: 16 });
    assert.equal(resumed.heldPieces, 3);
    assert.equal(resumed.appendOffset, 40);
    await resumed.append(data.subarray(40));
    await resumed.commit();
    assert.deepEqual(await readAll(await recovered.createReadStream(digest)), data);
    await recovered.close();
  });

  it("rescan after a crash: keeps what is consistent, removes the rest", async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    const good = await putBlob(store, testBytes(100, 5), { mediaType: "application/x-good" });
    await store.close();
    const hexOf = (seed: number): string => digestHex(digestOf(testBytes(10, seed)));
    const blobs = join(dir, "blobs", "sha256");
    const partials = join(dir, "partial", "sha256");
    const put = (path: string, content: string | Uint8Array): Promise<void> => writeFile(path, content);

    // A killed process's leftovers and foreign files.
    await put(join(dir, "tmp", "123-abcdef.tmp"), "half a state file");
    await mkdir(join(dir, "tmp", "nested"));
    await put(join(blobs, "not-a-digest"), "x");
    await put(join(blobs, `${hexOf(10)}.meta`), '{"mediaType":"orphan"}');
    await mkdir(join(blobs, hexOf(11)));
    await mkdir(join(dir, "blobs", "md5"));
    await put(join(partials, `${hexOf(12)}.data`), "data without state");
    await put(join(partials, `${hexOf(13)}.state`), "state without data");
    await put(join(partials, `${hexOf(14)}.data`), Buffer.alloc(10));
    await put(join(partials, `${hexOf(14)}.state`), '{"version":1,"dig');
    const mismatched = digestOf(testBytes(10, 15));
    await put(join(partials, `${digestHex(mismatched)}.data`), Buffer.alloc(9));
    await put(join(partials, `${digestHex(mismatched)}.state`), stateOf(mismatched, 10, 4, 0, [], undefined));
    await put(join(partials, `${digestHex(good.digest)}.data`), Buffer.alloc(100));
    await put(join(partials, `${digestHex(good.digest)}.state`), stateOf(good.digest, 100, 64, 0, [], undefined));

    // A partial whose data got further than its last saved state: the state lags, and that is fine.
    const lagging = testBytes(64, 16);
    const laggingDigest = digestOf(lagging);
    await put(join(partials, `${digestHex(laggingDigest)}.data`), Buffer.concat([lagging.subarray(0, 48), Buffer.alloc(16)]));
    await put(join(partials, `${digestHex(laggingDigest)}.state`), stateOf(laggingDigest, 64, 16, 16, [0, 1], undefined));

    const reopened = await openStore(dir);
    assert.deepEqual(await reopened.list(), [good]);
    assert.deepEqual(
      (await reopened.listPartials()).map((p) => p.digest),
      [laggingDigest],
    );
    assert.deepEqual(await readdir(join(dir, "tmp")), []);
    assert.deepEqual((await readdir(join(dir, "blobs"))).sort(), ["sha256", "sha512"]);
    assert.deepEqual((await readdir(blobs)).sort(), [digestHex(good.digest), `${digestHex(good.digest)}.meta`].sort());
    assert.deepEqual((await readdir(partials)).sort(), [`${digestHex(laggingDigest)}.data`, `${digestHex(laggingDigest)}.state`]);

    const resumed = await reopened.openPartial(laggingDigest, 64, { pieceSize: 16 });
    assert.equal(resumed.heldPieces, 2, "only what the state claims is trusted");
    assert.equal(resumed.appendOffset, 32);
    await resumed.append(lagging.subarray(32));
    await resumed.commit();
    assert.deepEqual(await readAll(await reopened.createReadStream(laggingDigest)), lagging);
    await reopened.close();
  });

  it("removes symlinks planted in the store without touching their targets", async () => {
    const dir = await tempDir();
    const outside = join(await tempDir(), "secret.txt");
    await writeFile(outside, "secret");
    const digest = digestOf("secret");
    await mkdir(join(dir, "blobs", "sha256"), { recursive: true });
    await mkdir(join(dir, "partial", "sha256"), { recursive: true });
    await symlink(outside, join(dir, "blobs", "sha256", digestHex(digest)));
    await symlink(outside, join(dir, "partial", "sha256", `${digestHex(digest)}.state`));
    await symlink(join(outside, ".."), join(dir, "blobs", "sha512"));
    const store = await openStore(dir);
    assert.equal(await store.stat(digest), undefined);
    assert.deepEqual(await store.listPartials(), []);
    assert.equal(await readFile(outside, "utf8"), "secret");
    assert.deepEqual(await readdir(join(dir, "blobs", "sha256")), []);
    assert.deepEqual(await readdir(join(dir, "blobs", "sha512")), []);
    await expectStoreError(store.stat(`sha256:../../${digestHex(digest)}` as Digest), "ERR_STORE_INVALID_ARGUMENT");
    await store.close();
  });

  it("commit hashes appended bytes as written and reads back only pieces that arrived ahead", async () => {
    const dir = await tempDir();
    const store = await openStore(dir);
    const data = testBytes(64, 6);
    const digest = digestOf(data);
    const dataPath = join(dir, "partial", "sha256", `${digestHex(digest)}.data`);

    // Sequential: the file is changed behind the store's back after the append; commit does not see it.
    const sequential = await store.openPartial(digest, 64, { pieceSize: 16 });
    await sequential.append(data);
    await scribble(dataPath, 5);
    await sequential.commit();
    assert.equal(await store.delete(digest), true);

    // Pieces 2 and 3 arrive ahead of the prefix; piece 3 is changed on disk before the prefix reaches it.
    const scattered = await store.openPartial(digest, 64, { pieceSize: 16 });
    await scattered.writePiece(2, data.subarray(32, 48));
    await scattered.writePiece(3, data.subarray(48, 64));
    await scribble(dataPath, 50);
    await scattered.writePiece(0, data.subarray(0, 16));
    await scattered.writePiece(1, data.subarray(16, 32));
    await expectStoreError(scattered.commit(), "ERR_STORE_DIGEST_MISMATCH");
    assert.equal(await store.stat(digest), undefined);
    await store.close();
  });
});
