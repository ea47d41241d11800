import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { digestOf } from "../oci/index.js";
import { isStoreError } from "./errors.js";
import { errnoCode } from "./store-helpers.js";
import { Collector, putBlob, readAll, testBytes } from "./testing/conformance-helpers.js";
import { openStore, removeTempDirs, tempDir } from "./testing/disk-helpers.js";

const run = promisify(execFile);
const FS_BYTES = 4 * 1024 * 1024;
const CHUNK_BYTES = 256 * 1024;
const isRoot = process.getuid?.() === 0;

describe("DiskBlobStore on a full disk", { skip: isRoot ? false : "needs root to mount a small tmpfs" }, () => {
  let dir = "";
  let mounted = false;
  let mountError = "";

  before(async () => {
    dir = await tempDir();
    try {
      await run("mount", ["-t", "tmpfs", "-o", `size=${FS_BYTES}`, "tmpfs", dir]);
      mounted = true;
    } catch (error: unknown) {
      mountError = String(error);
    }
  });

  after(async () => {
    try {
      if (mounted) await run("umount", [dir]).catch(() => run("umount", ["-l", dir]));
    } finally {
      await removeTempDirs();
    }
  });

  it("fails the partial cleanly with ENOSPC; nothing becomes visible; other blobs keep being served", async (t) => {
    if (!mounted) {
      t.skip(`cannot mount a tmpfs: ${mountError}`);
      return;
    }
    const store = await openStore(dir);
    try {
      const small = testBytes(64 * 1024, 1);
      const smallInfo = await putBlob(store, small, { pieceSize: 16 * 1024 });
      const bigDigest = digestOf("a blob bigger than the file system");
      const partial = await store.openPartial(bigDigest, 2 * FS_BYTES, { pieceSize: 1024 * 1024 });
      const reader = new Collector(partial.createReadStream());
      const chunk = testBytes(CHUNK_BYTES, 2);
      let failure: unknown;
      for (let written = 0; written < 2 * FS_BYTES; written += CHUNK_BYTES) {
        try {
          await partial.append(chunk);
        } catch (error: unknown) {
          failure = error;
          break;
        }
      }
      assert.ok(isStoreError(failure, "ERR_STORE_IO"), `expected ERR_STORE_IO, got ${String(failure)}`);
      assert.equal(errnoCode(failure.cause), "ENOSPC");
      assert.equal(partial.state, "aborted");
      assert.equal(await reader.waitForError(), failure);
      assert.equal(await store.stat(bigDigest), undefined);
      assert.deepEqual(await store.list(), [smallInfo]);
      assert.deepEqual(await store.listPartials(), []);
      assert.deepEqual(await readAll(await store.createReadStream(smallInfo.digest)), small);
      // The failed partial's space was given back.
      const later = testBytes(512 * 1024, 3);
      assert.equal((await putBlob(store, later, { pieceSize: 64 * 1024 })).size, later.length);
    } finally {
      await store.close();
    }
  });
});
