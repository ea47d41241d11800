import assert from "node:assert/strict";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { digestOf } from "../oci/index.js";
import { MIN_PIECE_SIZE_BYTES, sha256Of } from "../piece/index.js";
import { ExternalPieceHashes } from "./external-piece-hashes.js";
import { testBytes } from "./testing/conformance-helpers.js";

describe("ExternalPieceHashes", () => {
  const data = testBytes(MIN_PIECE_SIZE_BYTES + 10, 81);
  const blob = { digest: digestOf(data), size: data.length };
  const list = {
    pieceSize: MIN_PIECE_SIZE_BYTES,
    hashes: [sha256Of(data.subarray(0, MIN_PIECE_SIZE_BYTES)), sha256Of(data.subarray(MIN_PIECE_SIZE_BYTES))],
  };

  it("keeps hashes across instances, ignores unreadable records, and retains only what the source holds", async () => {
    const dir = await mkdtemp(join(tmpdir(), "shoal-external-hashes-"));
    try {
      const first = await ExternalPieceHashes.open({ dir });
      await first.put(blob, list);
      const second = await ExternalPieceHashes.open({ dir });
      assert.deepEqual(
        (await second.get(blob))?.hashes.map((h) => Buffer.from(h)),
        list.hashes,
      );
      assert.equal(
        await second.get({ digest: blob.digest, size: 3 * MIN_PIECE_SIZE_BYTES }),
        undefined,
        "a record that does not fit the size is not used",
      );

      const other = testBytes(100, 82);
      const corrupt = { digest: digestOf(other), size: other.length };
      await writeFile(join(dir, "sha256", corrupt.digest.slice("sha256:".length)), "not a piece hash file");
      assert.equal(await (await ExternalPieceHashes.open({ dir })).get(corrupt), undefined);

      assert.equal(await second.retainOnly(new Set([blob.digest])), 1, "the corrupt record of a blob not held is removed");
      assert.deepEqual(await readdir(join(dir, "sha256")), [blob.digest.slice("sha256:".length)]);
      await second.forget(blob.digest);
      assert.deepEqual(await readdir(join(dir, "sha256")), []);
      assert.equal(await second.get(blob), undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("in memory, keeps at most its budget of hash bytes (least recently used go first)", async () => {
    const cache = await ExternalPieceHashes.open({ maxMemoryHashBytes: 64 });
    const blobs = [1, 2, 3].map((seed) => {
      const bytes = testBytes(MIN_PIECE_SIZE_BYTES + 10, 90 + seed);
      return { digest: digestOf(bytes), size: bytes.length };
    });
    for (const b of blobs) await cache.put(b, list);
    assert.equal(await cache.get(blobs[0] ?? blob), undefined, "the oldest is gone");
    assert.ok(await cache.get(blobs[2] ?? blob));
  });
});
