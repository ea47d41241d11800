import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { randomBlobChunks, writeRandomBlob } from "./random-blob.js";

describe("writeRandomBlob", () => {
  let root = "";
  before(async () => {
    root = await mkdtemp(join(tmpdir(), "shoal-imagegen-blob-"));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("writes a deterministic blob of exactly N bytes and returns its digest", async () => {
    const bytes = 3 * 1024 * 1024 + 7;
    const first = await writeRandomBlob({ file: join(root, "a", "blob"), seed: "bench", bytes });
    const second = await writeRandomBlob({ file: join(root, "b", "blob"), seed: "bench", bytes });
    const content = await readFile(join(root, "a", "blob"));
    assert.equal(content.length, bytes);
    assert.equal(first.size, bytes);
    assert.equal(first.digest, `sha256:${createHash("sha256").update(content).digest("hex")}`);
    assert.deepEqual(second, first);
    assert.deepEqual(Buffer.concat([...randomBlobChunks("bench", bytes, 65_536)]), content);
    assert.deepEqual(await readdir(join(root, "a")), ["blob"], "no temporary file left behind");
  });

  it("gives different content for different seeds, and handles empty blobs", async () => {
    const a = await writeRandomBlob({ file: join(root, "c"), seed: "one", bytes: 1024 });
    const b = await writeRandomBlob({ file: join(root, "d"), seed: "two", bytes: 1024 });
    assert.notEqual(a.digest, b.digest);
    const empty = await writeRandomBlob({ file: join(root, "e"), seed: "one", bytes: 0 });
    assert.equal(empty.digest, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  });
});
