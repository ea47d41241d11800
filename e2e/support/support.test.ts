import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { type GeneratedImageLayout, type GeneratedPlatformImage, generateImageLayout } from "../../pkg/imagegen/index.js";
import { digestHex } from "../../pkg/oci/index.js";
import { Containerd, writeHostsToml } from "./containerd.js";
import { DockerRegistry } from "./docker-registry.js";
import { HarnessError } from "./errors.js";
import { getFreePort } from "./ports.js";
import { describeError, pathExists } from "./process.js";
import { skopeoCopyToDir, skopeoInspectRaw, skopeoPushLayout } from "./skopeo.js";

const SUITE_TIMEOUT_MS = 180_000;
const REPOSITORY = "shoal/support-test";
const TAG = "v1";

/** Blobs a pull of one platform fetches: its layers and config (manifests are not blob GETs). */
function blobsOf(image: GeneratedPlatformImage): { digests: string[]; bytes: number } {
  const digests = [...image.layers.map((layer) => layer.descriptor.digest), image.config.digest];
  return { digests: digests.sort(), bytes: image.layerBytes + image.config.size };
}

function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ESRCH";
  }
}

describe("e2e support: docker-registry, skopeo and containerd harnesses", { timeout: SUITE_TIMEOUT_MS }, () => {
  let work = "";
  let image: GeneratedImageLayout;
  let registry: DockerRegistry | undefined;
  let proxy: DockerRegistry | undefined;
  let containerd: Containerd | undefined;
  let ref = "";

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "shoal-support-test-"));
    image = await generateImageLayout({
      dir: join(work, "layout"),
      seed: "e2e-support",
      layers: 3,
      totalBytes: 3 * 1024 * 1024,
      platforms: ["linux/amd64", "linux/arm64"],
      tag: TAG,
    });
    registry = await DockerRegistry.start();
    containerd = await Containerd.start();
    ref = `${registry.host}/${REPOSITORY}:${TAG}`;
  });

  // Runs also when `before` or a test failed: stop whatever was started, report every failure.
  after(async () => {
    const failures: string[] = [];
    for (const daemon of [containerd, proxy, registry]) {
      try {
        await daemon?.stop();
      } catch (error) {
        failures.push(describeError(error));
      }
    }
    if (work !== "") await rm(work, { recursive: true, force: true });
    assert.deepEqual(failures, []);
  });

  const amd64 = (): GeneratedPlatformImage => image.images.find((i) => i.platform.architecture === "amd64")!;
  const arm64 = (): GeneratedPlatformImage => image.images.find((i) => i.platform.architecture === "arm64")!;

  it("pushes a generated two-platform layout with skopeo, digests unchanged", async () => {
    await skopeoPushLayout({ layoutDir: image.dir, tag: TAG, destination: `${registry!.host}/${REPOSITORY}:${TAG}` });
    const served = await skopeoInspectRaw(ref);
    const written = await readFile(join(image.dir, "blobs", "sha256", digestHex(image.root.digest)), "utf8");
    assert.equal(served, written);
  });

  it("pulls with containerd straight from the registry, and counts the blob bytes served", async (t) => {
    // Only `server`: containerd 1.6 logs "invalid `host` tree" and pulls from the reference's host.
    await writeHostsToml(containerd!.hostsDir, registry!.host, { server: registry!.url });
    const mark = await registry!.mark();
    await containerd!.pull(ref, { plainHttp: true, platform: "linux/amd64" });

    const listed = (await containerd!.listImages()).find((entry) => entry.ref === ref);
    assert.ok(listed, "ctr images ls lists the pulled image");
    assert.equal(listed.digest, image.root.digest);
    assert.deepEqual(listed.platforms, ["linux/amd64", "linux/arm64"]);

    const expected = blobsOf(amd64());
    const gets = await registry!.blobGets({ since: mark });
    assert.deepEqual(gets.map((get) => get.digest).sort(), expected.digests);
    assert.ok(gets.every((get) => get.userAgent.startsWith("containerd/") && get.repository === REPOSITORY));
    const bytes = await registry!.servedBlobBytes({ since: mark });
    assert.equal(bytes, expected.bytes);
    t.diagnostic(`registry served ${bytes} blob bytes for a ${expected.bytes}-byte platform image`);

    await containerd!.removeImage(ref);
    assert.equal(
      (await containerd!.listImages()).find((entry) => entry.ref === ref),
      undefined,
    );
  });

  it("copies the image back out of the registry with skopeo, digests unchanged", async () => {
    const dest = join(work, "copied");
    await skopeoCopyToDir({ source: ref, destDir: dest, format: "oci", tag: TAG, all: true });
    const index: unknown = JSON.parse(await readFile(join(dest, "index.json"), "utf8"));
    assert.equal((index as { manifests: { digest: string }[] }).manifests[0]?.digest, image.root.digest);
    for (const blob of image.blobs) assert.ok(await pathExists(join(dest, "blobs", "sha256", digestHex(blob.digest))), blob.digest);
  });

  it("runs docker-registry as a pull-through cache behind a containerd hosts.toml mirror", async () => {
    proxy = await DockerRegistry.start({ proxyRemoteUrl: registry!.url });
    await writeHostsToml(containerd!.hostsDir, registry!.host, { server: registry!.url, mirror: proxy.url });
    const originMark = await registry!.mark();
    await containerd!.pull(ref, { platform: "linux/arm64" });

    const expected = blobsOf(arm64());
    const viaProxy = await proxy.blobGets();
    assert.deepEqual(viaProxy.map((get) => get.digest).sort(), expected.digests);
    assert.ok(
      viaProxy.every((get) => get.uri.includes(`?ns=${encodeURIComponent(registry!.host)}`)),
      "containerd names the upstream in ?ns=",
    );
    assert.equal(await proxy.servedBlobBytes(), expected.bytes);
    // The cache fetched every blob from the origin at least once (distribution 2.8 fetches cold blobs twice).
    const originGets = await registry!.blobGets({ since: originMark });
    assert.deepEqual([...new Set(originGets.map((get) => get.digest))].sort(), expected.digests);
    assert.ok(originGets.reduce((sum, get) => sum + get.bytes, 0) >= expected.bytes);
  });

  it("reports a daemon that fails to start, with its log", async () => {
    await assert.rejects(DockerRegistry.start({ binary: "/bin/false", startTimeoutMs: 2_000 }), (error: unknown) => {
      assert.ok(error instanceof HarnessError);
      assert.equal(error.code, "ERR_HARNESS_START");
      return true;
    });
    const port = await getFreePort();
    assert.ok(port > 0 && port < 65536);
  });

  it("stops each daemon by PID and removes its temp dir", async () => {
    for (const daemon of [proxy!, containerd!, registry!]) {
      await daemon.stop();
      assert.ok(isGone(daemon.pid), `pid ${daemon.pid} is gone`);
      assert.equal(await pathExists(daemon.tempDir), false);
    }
  });
});
