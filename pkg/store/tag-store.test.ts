import assert from "node:assert/strict";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { type Digest, digestOf } from "../oci/index.js";
import { DiskTagStore } from "./disk-tag-store.js";
import { isStoreError } from "./errors.js";
import { MemoryTagStore } from "./memory-tag-store.js";
import type { TagRecord, TagStore } from "./tag-store.js";
import { removeTempDirs, tempDir } from "./testing/disk-helpers.js";

after(removeTempDirs);

const MEDIA_TYPE = "application/vnd.oci.image.index.v1+json";

function record(seed: string, seenAt: number): TagRecord {
  return { digest: digestOf(seed), mediaType: MEDIA_TYPE, size: seed.length, seenAt };
}

/** Behaviour both tag stores share. */
function runTagStoreTests(
  name: string,
  create: (options: { maxRecords?: number }) => Promise<{ tags: TagStore; cleanup: () => Promise<void> }>,
): void {
  describe(`TagStore: ${name}`, () => {
    it("remembers the last record per registry, repository and tag", async () => {
      const { tags, cleanup } = await create({});
      try {
        assert.equal(tags.get("docker.io", "library/alpine", "3"), undefined);
        tags.set("docker.io", "library/alpine", "3", record("a", 1));
        tags.set("docker.io", "library/alpine", "3", record("b", 2));
        tags.set("ghcr.io", "library/alpine", "3", record("c", 3));
        tags.set("docker.io", "library/alpine", "latest", record("d", 4));
        assert.deepEqual(tags.get("docker.io", "library/alpine", "3"), record("b", 2));
        assert.deepEqual(tags.get("ghcr.io", "library/alpine", "3"), record("c", 3));
        assert.deepEqual(tags.get("docker.io", "library/alpine", "latest"), record("d", 4));
        // Keys are not confusable through separators inside names.
        tags.set("a", "b/c", "d", record("e", 5));
        assert.equal(tags.get("a/b", "c", "d"), undefined);
      } finally {
        await cleanup();
      }
    });

    it("drops the record seen longest ago beyond its bound", async () => {
      const { tags, cleanup } = await create({ maxRecords: 3 });
      try {
        tags.set("r", "n", "t1", record("1", 50));
        tags.set("r", "n", "t2", record("2", 10));
        tags.set("r", "n", "t3", record("3", 30));
        tags.set("r", "n", "t4", record("4", 40));
        assert.equal(tags.get("r", "n", "t2"), undefined, "oldest seenAt dropped, not the first inserted");
        assert.ok(tags.get("r", "n", "t1"));
        assert.ok(tags.get("r", "n", "t3"));
        assert.ok(tags.get("r", "n", "t4"));
      } finally {
        await cleanup();
      }
    });

    it("rejects malformed records and use after close", async () => {
      const { tags, cleanup } = await create({});
      try {
        assert.throws(
          () => {
            tags.set("r", "n", "t", { ...record("x", 1), digest: "sha256:nope" as Digest });
          },
          (error: unknown) => isStoreError(error, "ERR_STORE_INVALID_ARGUMENT"),
        );
        await tags.close();
        assert.throws(
          () => {
            tags.set("r", "n", "t", record("x", 1));
          },
          (error: unknown) => isStoreError(error, "ERR_STORE_CLOSED"),
        );
      } finally {
        await cleanup();
      }
    });
  });
}

runTagStoreTests("MemoryTagStore", (options) => {
  const tags = new MemoryTagStore(options);
  return Promise.resolve({ tags, cleanup: () => tags.close() });
});

runTagStoreTests("DiskTagStore", async (options) => {
  const tags = await DiskTagStore.open({ dir: await tempDir(), ...options });
  return { tags, cleanup: () => tags.close() };
});

describe("DiskTagStore", () => {
  it("persists across reopen; flush writes atomically, no temporary files left", async () => {
    const dir = await tempDir();
    const tags = await DiskTagStore.open({ dir, flushDelayMs: 60_000 });
    tags.set("docker.io", "library/nginx", "1.27", record("n", 1000));
    assert.deepEqual(await readdir(dir), [], "debounced: nothing written yet");
    await tags.flush();
    assert.deepEqual(await readdir(dir), ["tags.json"]);
    tags.set("docker.io", "library/nginx", "latest", record("m", 2000));
    await tags.close();
    const reopened = await DiskTagStore.open({ dir });
    assert.deepEqual(reopened.get("docker.io", "library/nginx", "1.27"), record("n", 1000));
    assert.deepEqual(reopened.get("docker.io", "library/nginx", "latest"), record("m", 2000));
    await reopened.close();
  });

  it("writes on its own after the debounce delay", async () => {
    const dir = await tempDir();
    const tags = await DiskTagStore.open({ dir, flushDelayMs: 5 });
    tags.set("r", "n", "t", record("x", 1));
    const deadline = Date.now() + 5000;
    while (!(await readdir(dir)).includes("tags.json")) {
      assert.ok(Date.now() < deadline, "tags.json was never written");
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const saved = JSON.parse(await readFile(join(dir, "tags.json"), "utf8")) as { tags: unknown[] };
    assert.equal(saved.tags.length, 1);
    await tags.close();
  });

  it("replaces a corrupt file instead of failing, and skips malformed records", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "tags.json"), "{ not json");
    await writeFile(join(dir, ".tags.json.123-abcdef012345.tmp"), "left by a killed writer");
    const tags = await DiskTagStore.open({ dir });
    assert.equal(tags.get("r", "n", "t"), undefined);
    await tags.flush();
    assert.deepEqual(JSON.parse(await readFile(join(dir, "tags.json"), "utf8")), { version: 1, tags: [] });
    assert.deepEqual(await readdir(dir), ["tags.json"]);
    await tags.close();

    const good = { registry: "r", name: "n", tag: "good", ...record("g", 1) };
    await writeFile(
      join(dir, "tags.json"),
      JSON.stringify({ version: 1, tags: [good, { registry: "r", name: "n", tag: "bad", digest: "x" }] }),
    );
    const partly = await DiskTagStore.open({ dir });
    assert.deepEqual(partly.get("r", "n", "good"), record("g", 1));
    assert.equal(partly.get("r", "n", "bad"), undefined);
    await partly.close();
  });
});
