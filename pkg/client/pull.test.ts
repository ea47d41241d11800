import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { generateImageLayout, type GeneratedImageLayout } from "../imagegen/index.js";
import { LayoutRegistry } from "../origin/index.js";
import { PullError, pullImage } from "./index.js";

describe("pullImage against the embedded layout registry", () => {
  let work: string;
  let layout: GeneratedImageLayout;
  let origin: LayoutRegistry;
  before(async () => {
    work = await mkdtemp(join(tmpdir(), "shoal-pull-"));
    layout = await generateImageLayout({
      dir: join(work, "image"),
      seed: "pull-test",
      layers: 5,
      totalBytes: 6_000_000,
      platforms: ["linux/amd64", "linux/arm64"],
      tag: "v1",
    });
    origin = await LayoutRegistry.start({ dir: layout.dir });
  });
  after(async () => {
    await origin.close();
    await rm(work, { recursive: true, force: true });
  });

  it("pulls the requested platform of an index, counting every byte once, with digests verified", async () => {
    for (const architecture of ["amd64", "arm64"]) {
      const image = layout.images.find((i) => i.platform.architecture === architecture)!;
      const before = origin.bytesServed;
      const result = await pullImage({ baseUrl: origin.url, name: "any/name", reference: "v1", platform: { os: "linux", architecture } });
      assert.equal(result.digest, layout.root.digest);
      assert.deepEqual(
        result.descriptors.slice(2).map((d) => d.digest),
        [image.config.digest, ...image.layers.map((l) => l.descriptor.digest)],
      );
      const expected = layout.root.size + image.imageBytes;
      assert.equal(result.bytes, expected, "bytes summed over concurrent blob fetches");
      assert.equal(origin.bytesServed - before, expected);
    }
  });

  it("hands verified blobs to a sink", async () => {
    const seen = new Map<string, number>();
    await pullImage({
      baseUrl: origin.url,
      name: "x/y",
      reference: "v1",
      sink: (d) =>
        new Writable({
          write(chunk: Buffer, _e, cb) {
            seen.set(d.digest, (seen.get(d.digest) ?? 0) + chunk.length);
            cb();
          },
        }),
    });
    const image = layout.images.find((i) => i.platform.architecture === "amd64")!;
    for (const layer of image.layers) assert.equal(seen.get(layer.descriptor.digest), layer.descriptor.size);
  });

  it("hands each manifest's verified bytes to onManifest before its blobs", async () => {
    const seen: { digest: string; hash: string; mediaType: string }[] = [];
    await pullImage({
      baseUrl: origin.url,
      name: "x/y",
      reference: "v1",
      platform: { os: "linux", architecture: "arm64" },
      onManifest: (d, body) =>
        seen.push({ digest: d.digest, hash: `sha256:${createHash("sha256").update(body).digest("hex")}`, mediaType: d.mediaType }),
    });
    const arm = layout.images.find((i) => i.platform.architecture === "arm64")!;
    assert.deepEqual(
      seen.map((m) => m.digest),
      [layout.root.digest, arm.manifest.digest],
    );
    for (const m of seen) assert.equal(m.hash, m.digest);
  });

  it("fails the pull, without hanging, when a sink fails", async () => {
    const failing = (): Writable =>
      new Writable({
        highWaterMark: 1024,
        write(_chunk: Buffer, _e, cb) {
          setImmediate(() => {
            cb(new Error("disk full"));
          });
        },
      });
    await assert.rejects(pullImage({ baseUrl: origin.url, name: "x/y", reference: "v1", sink: failing }), /disk full/);
  });

  it("fails on a blob whose bytes do not match its digest", async () => {
    const image = layout.images.find((i) => i.platform.architecture === "amd64")!;
    const layer = image.layers[0]!.descriptor;
    const path = join(layout.dir, "blobs", "sha256", layer.digest.slice("sha256:".length));
    const original = await readFile(path);
    const corrupted = Buffer.from(original);
    corrupted[corrupted.length - 1] = (corrupted[corrupted.length - 1]! + 1) % 256;
    await writeFile(path, corrupted);
    try {
      await assert.rejects(
        pullImage({ baseUrl: origin.url, name: "x/y", reference: "v1" }),
        (error: unknown) => error instanceof PullError && error.code === "ERR_PULL_DIGEST_MISMATCH",
      );
    } finally {
      await writeFile(path, original);
    }
  });

  it("reports a missing tag with the status", async () => {
    await assert.rejects(pullImage({ baseUrl: origin.url, name: "x/y", reference: "nope" }), /HTTP 404/);
  });
});
