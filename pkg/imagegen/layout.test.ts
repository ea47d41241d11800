import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  MEDIA_TYPE_OCI_CONFIG,
  MEDIA_TYPE_OCI_INDEX,
  MEDIA_TYPE_OCI_LAYER,
  MEDIA_TYPE_OCI_MANIFEST,
  digestHex,
  isDigest,
} from "../oci/index.js";
import { ANNOTATION_REF_NAME, type Descriptor } from "../oci/index.js";
import { isImagegenError } from "./errors.js";
import { type GenerateImageLayoutOptions, type GeneratedImageLayout, generateImageLayout } from "./layout.js";
import { TAR_BLOCK_BYTES } from "./tar.js";
import { readTarEntries } from "./testing/tar-reader.js";

const MiB = 1024 * 1024;

async function sha256OfFile(path: string): Promise<string> {
  return createHash("sha256")
    .update(await readFile(path))
    .digest("hex");
}

/** Every file of a directory tree, relative path → sha256. */
async function treeDigests(dir: string): Promise<Map<string, string>> {
  const result = new Map<string, string>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    result.set(path.slice(dir.length + 1), await sha256OfFile(path));
  }
  return result;
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  const value: unknown = JSON.parse(await readFile(path, "utf8"));
  assert.ok(typeof value === "object" && value !== null && !Array.isArray(value), `${path} is a JSON object`);
  return value as Record<string, unknown>;
}

function blobPath(dir: string, descriptor: Descriptor): string {
  return join(dir, "blobs", "sha256", digestHex(descriptor.digest));
}

/** A descriptor as the OCI spec requires: media type, valid digest, integer size, and nothing unexpected. */
function assertDescriptor(value: unknown, mediaType: string): asserts value is Descriptor {
  assert.ok(typeof value === "object" && value !== null);
  const descriptor = value as Record<string, unknown>;
  assert.equal(descriptor.mediaType, mediaType);
  assert.ok(typeof descriptor.digest === "string" && isDigest(descriptor.digest), `valid digest ${String(descriptor.digest)}`);
  assert.ok(Number.isSafeInteger(descriptor.size) && (descriptor.size as number) >= 0);
  for (const key of Object.keys(descriptor))
    assert.ok(["mediaType", "digest", "size", "platform", "annotations"].includes(key), `unexpected ${key}`);
}

describe("generateImageLayout", () => {
  let root = "";
  before(async () => {
    root = await mkdtemp(join(tmpdir(), "shoal-imagegen-test-"));
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const multiArch = (dir: string, seed = "determinism"): GenerateImageLayoutOptions => ({
    dir: join(root, dir),
    seed,
    layers: 4,
    totalBytes: 2 * MiB + 12_345,
    platforms: ["linux/amd64", "linux/arm64"],
    tag: "v1",
  });

  let image: GeneratedImageLayout;
  before(async () => {
    image = await generateImageLayout(multiArch("a"));
  });

  it("writes byte-identical layouts for the same seed and options", async () => {
    const again = await generateImageLayout(multiArch("b"));
    assert.deepEqual({ ...again, dir: "" }, { ...image, dir: "" });
    assert.deepEqual(await treeDigests(again.dir), await treeDigests(image.dir));
    const other = await generateImageLayout(multiArch("c", "another seed"));
    assert.notEqual(other.root.digest, image.root.digest);
  });

  it("names every blob by its digest and describes its size", async () => {
    const files = (await readdir(join(image.dir, "blobs", "sha256"))).sort();
    assert.deepEqual(files, image.blobs.map((blob) => digestHex(blob.digest)).sort());
    for (const blob of image.blobs) {
      const path = blobPath(image.dir, blob);
      assert.equal(`sha256:${await sha256OfFile(path)}`, blob.digest);
      assert.equal((await stat(path)).size, blob.size);
    }
    assert.equal(
      image.totalBlobBytes,
      image.blobs.reduce((sum, blob) => sum + blob.size, 0),
    );
  });

  it("writes layers as valid ustar archives of the described files", async () => {
    for (const layer of image.images.flatMap((platformImage) => platformImage.layers)) {
      const entries = await readTarEntries(blobPath(image.dir, layer.descriptor));
      const [rootDir, layerDir, ...files] = entries;
      assert.equal(rootDir?.header.path, "shoal/");
      assert.equal(rootDir.header.type, "directory");
      assert.equal(layerDir?.header.type, "directory");
      assert.deepEqual(
        files.map((entry) => ({ path: entry.header.path, size: entry.header.size })),
        layer.files,
      );
      for (const entry of files) {
        assert.equal(entry.header.type, "file");
        assert.ok(entry.header.path.startsWith(layerDir.header.path));
        assert.equal(entry.header.mode, 0o644);
      }
      // The data file is cut short of a block boundary, so padding is exercised.
      assert.notEqual((layer.files[0]?.size ?? 0) % TAR_BLOCK_BYTES, 0);
      assert.equal(layer.diffId, layer.descriptor.digest, "diff_id of an uncompressed layer is its digest");
    }
  });

  it("writes index.json, the image index, manifests and configs as the OCI image spec describes", async () => {
    assert.deepEqual(await readJson(join(image.dir, "oci-layout")), { imageLayoutVersion: "1.0.0" });
    const top = await readJson(join(image.dir, "index.json"));
    assert.equal(top.schemaVersion, 2);
    assert.equal(top.mediaType, MEDIA_TYPE_OCI_INDEX);
    assert.ok(Array.isArray(top.manifests) && top.manifests.length === 1);
    const rootDescriptor: unknown = top.manifests[0];
    assertDescriptor(rootDescriptor, MEDIA_TYPE_OCI_INDEX);
    assert.deepEqual(rootDescriptor.annotations, { [ANNOTATION_REF_NAME]: "v1" });
    assert.equal(rootDescriptor.digest, image.index?.digest);

    const index = await readJson(blobPath(image.dir, rootDescriptor));
    assert.equal(index.schemaVersion, 2);
    assert.equal(index.mediaType, MEDIA_TYPE_OCI_INDEX);
    assert.ok(Array.isArray(index.manifests));
    assert.deepEqual(
      index.manifests.map((entry: unknown) => (entry as Descriptor).platform),
      [
        { architecture: "amd64", os: "linux" },
        { architecture: "arm64", os: "linux" },
      ],
    );
    for (const [i, entry] of (index.manifests as unknown[]).entries()) {
      assertDescriptor(entry, MEDIA_TYPE_OCI_MANIFEST);
      const expected = image.images[i];
      assert.ok(expected !== undefined);
      assert.equal(entry.digest, expected.manifest.digest);
      assert.equal(entry.size, (await stat(blobPath(image.dir, entry))).size);

      const manifest = await readJson(blobPath(image.dir, entry));
      assert.equal(manifest.schemaVersion, 2);
      assert.equal(manifest.mediaType, MEDIA_TYPE_OCI_MANIFEST);
      assertDescriptor(manifest.config, MEDIA_TYPE_OCI_CONFIG);
      assert.ok(Array.isArray(manifest.layers) && manifest.layers.length === 4);
      for (const layer of manifest.layers as unknown[]) assertDescriptor(layer, MEDIA_TYPE_OCI_LAYER);

      const config = await readJson(blobPath(image.dir, manifest.config));
      assert.equal(config.architecture, expected.platform.architecture);
      assert.equal(config.os, "linux");
      assert.deepEqual(config.rootfs, { type: "layers", diff_ids: (manifest.layers as Descriptor[]).map((layer) => layer.digest) });
      assert.ok(Array.isArray(config.history) && config.history.length === 4);
      assert.equal(expected.imageBytes, entry.size + manifest.config.size + expected.layerBytes);
    }
  });

  it("shares the top layers across platforms and gives each platform its own lower layers", () => {
    const [amd64, arm64] = image.images.map((platformImage) => platformImage.layers.map((layer) => layer.descriptor.digest));
    assert.ok(amd64 !== undefined && arm64 !== undefined);
    assert.deepEqual(amd64.slice(2), arm64.slice(2));
    assert.equal(new Set([...amd64.slice(0, 2), ...arm64.slice(0, 2)]).size, 4);
    assert.deepEqual(
      image.images[0]?.layers.map((layer) => layer.shared),
      [false, false, true, true],
    );
  });

  it("points index.json straight at the manifest for a single platform", async () => {
    const single = await generateImageLayout({ dir: join(root, "single"), seed: "s", layers: 2, totalBytes: 64 * 1024 });
    assert.equal(single.index, undefined);
    assert.equal(single.root.mediaType, MEDIA_TYPE_OCI_MANIFEST);
    assert.equal(single.root.digest, single.images[0]?.manifest.digest);
    assert.equal(single.root.annotations?.[ANNOTATION_REF_NAME], "latest");
    assert.equal(single.images[0]?.manifest.platform, undefined);
    assert.equal(single.blobs.length, 2 + 2);
  });

  it("keeps the other tags of a layout when asked, replacing an entry of the same tag", async () => {
    const dir = join(root, "two-images");
    const first = await generateImageLayout({ dir, seed: "one", layers: 1, totalBytes: 64 * 1024, tag: "one" });
    const second = await generateImageLayout({ dir, seed: "two", layers: 1, totalBytes: 64 * 1024, tag: "two", keepOtherTags: true });
    const again = await generateImageLayout({ dir, seed: "two-b", layers: 1, totalBytes: 64 * 1024, tag: "two", keepOtherTags: true });
    assert.notEqual(second.root.digest, again.root.digest);
    const named = (await readJson(join(dir, "index.json"))).manifests as Descriptor[];
    assert.deepEqual(
      named.map((d) => [d.annotations?.[ANNOTATION_REF_NAME], d.digest]),
      [
        ["one", first.root.digest],
        ["two", again.root.digest],
      ],
    );
    for (const layout of [first, again]) for (const blob of layout.blobs) await stat(blobPath(dir, blob));
    // Without the option, index.json names only the new image.
    await generateImageLayout({ dir, seed: "three", layers: 1, totalBytes: 64 * 1024, tag: "three" });
    assert.deepEqual(
      ((await readJson(join(dir, "index.json"))).manifests as Descriptor[]).map((d) => d.annotations?.[ANNOTATION_REF_NAME]),
      ["three"],
    );
  });

  it("hits the requested layer bytes within one tar block per layer", () => {
    for (const platformImage of image.images) {
      const target = 2 * MiB + 12_345;
      assert.ok(
        platformImage.layerBytes <= target && platformImage.layerBytes > target - 4 * TAR_BLOCK_BYTES,
        `${platformImage.layerBytes}`,
      );
    }
  });

  it("rejects invalid options", async () => {
    const invalid = (error: unknown): boolean => isImagegenError(error, "ERR_IMAGEGEN_INVALID_OPTIONS");
    const dir = join(root, "invalid");
    await assert.rejects(generateImageLayout({ dir, seed: "s", layers: 0, totalBytes: 1 }), invalid);
    await assert.rejects(generateImageLayout({ dir, seed: "s", layers: 1, totalBytes: -1 }), invalid);
    await assert.rejects(generateImageLayout({ dir, seed: "s", layers: 1, totalBytes: 1, platforms: ["linux"] }), invalid);
    await assert.rejects(
      generateImageLayout({ dir, seed: "s", layers: 1, totalBytes: 1, platforms: ["linux/amd64", "linux/amd64"] }),
      invalid,
    );
    await assert.rejects(generateImageLayout({ dir, seed: "s", layers: 1, totalBytes: 1, tag: "no/slash" }), invalid);
    await assert.rejects(
      generateImageLayout({ dir, seed: "s", layers: 2, totalBytes: 1, platforms: ["linux/amd64", "linux/arm64"], sharedLayers: 3 }),
      invalid,
    );
  });

  it("stops when aborted and leaves no temporary files", async () => {
    const dir = join(root, "aborted");
    const controller = new AbortController();
    const timer = setTimeout(() => {
      controller.abort();
    }, 20);
    await assert.rejects(
      generateImageLayout({ dir, seed: "s", layers: 2, totalBytes: 512 * MiB, signal: controller.signal }),
      (error: unknown) => isImagegenError(error, "ERR_IMAGEGEN_ABORTED"),
    );
    clearTimeout(timer);
    const leftovers = (await readdir(join(dir, "blobs", "sha256"))).filter((name) => name.endsWith(".tmp"));
    assert.deepEqual(leftovers, []);
    await assert.rejects(stat(join(dir, "index.json")));
  });

  it("reports generation throughput", async (t) => {
    const dir = join(root, "throughput");
    const totalBytes = 256 * MiB;
    const started = performance.now();
    const result = await generateImageLayout({ dir, seed: "throughput", layers: 4, totalBytes });
    const seconds = (performance.now() - started) / 1000;
    t.diagnostic(
      `generated ${(result.totalBlobBytes / MiB).toFixed(0)} MiB in ${seconds.toFixed(2)} s: ${(result.totalBlobBytes / MiB / seconds).toFixed(0)} MiB/s`,
    );
    await rm(dir, { recursive: true, force: true });
  });
});
