// The agent as a registry mirror, with real components: Debian's docker-registry as the origin,
// skopeo and containerd as clients, `shoal agent` as a separate process.
import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { generateImageLayout, type GeneratedImageLayout } from "../pkg/imagegen/index.js";
import { Containerd, writeHostsToml } from "./support/containerd.js";
import { DockerRegistry } from "./support/docker-registry.js";
import { makeTempDir, pathExists, removeTempDir } from "./support/process.js";
import { ShoalAgent } from "./support/shoal-agent.js";
import { skopeoCopyToDir, skopeoPushLayout } from "./support/skopeo.js";

const REPO = "e2e/app";
const TAG = "v1";
const IMAGE_BYTES = 96 * 1024 * 1024;

describe("agent as a pull-through mirror (docker-registry, skopeo, containerd)", () => {
  let work: string;
  let layout: GeneratedImageLayout;
  let origin: DockerRegistry;
  let agent: ShoalAgent | undefined;
  let containerd: Containerd;
  let hostsDir: string;
  let ref: string;
  let restartedDataDir: string | undefined;
  const amd64Blobs = (): number => {
    const image = layout.images.find((i) => i.platform.architecture === "amd64");
    assert.ok(image);
    return image.config.size + image.layerBytes;
  };

  before(async () => {
    work = await makeTempDir("e2e-mirror");
    layout = await generateImageLayout({
      dir: join(work, "layout"),
      seed: "e2e-mirror",
      layers: 4,
      totalBytes: IMAGE_BYTES,
      platforms: ["linux/amd64", "linux/arm64"],
      tag: TAG,
    });
    origin = await DockerRegistry.start();
    await skopeoPushLayout({ layoutDir: layout.dir, tag: TAG, destination: `${origin.host}/${REPO}:${TAG}` });
    agent = await ShoalAgent.start({ upstreams: [`${origin.host}=${origin.url}`] });
    containerd = await Containerd.start();
    hostsDir = join(work, "hosts");
    await writeHostsToml(hostsDir, origin.host, { server: origin.url, mirror: agent.mirrorUrl });
    ref = `${origin.host}/${REPO}:${TAG}`;
  });

  after(async () => {
    await containerd.stop().catch(() => undefined);
    await agent?.stop().catch(() => undefined);
    await origin.stop().catch(() => undefined);
    if (restartedDataDir !== undefined) await removeTempDir(restartedDataDir);
    await removeTempDir(work);
  });

  it("containerd pulls through the agent: the origin sends each blob once", async () => {
    assert.ok(agent);
    const mark = await origin.mark();
    await containerd.pull(ref, { hostsDir, plainHttp: true });
    assert.ok((await containerd.listImages()).some((i) => i.ref === ref));
    const originBytes = await origin.servedBlobBytes({ since: mark });
    assert.equal(originBytes, amd64Blobs(), "config and layers of linux/amd64, each exactly once");
    assert.ok(
      (await agent.metric("shoal_blob_bytes_served_total", { source: "origin" })) >= amd64Blobs(),
      "the bytes went through the agent",
    );
    assert.equal((await agent.metric("shoal_origin_bytes_fetched_total")) >= amd64Blobs(), true);
  });

  it("a second pull after `ctr images rm` costs zero origin blob bytes", async () => {
    assert.ok(agent);
    await containerd.removeImage(ref);
    const localBefore = await agent.metric("shoal_blob_bytes_served_total", { source: "local" });
    const mark = await origin.mark();
    await containerd.pull(ref, { hostsDir, plainHttp: true });
    assert.equal(await origin.servedBlobBytes({ since: mark }), 0);
    assert.ok((await agent.metric("shoal_blob_bytes_served_total", { source: "local" })) - localBefore >= amd64Blobs());
  });

  it("skopeo pulls through the agent with the registry as first path segment; bytes match the source", async () => {
    assert.ok(agent);
    const dest = join(work, "skopeo-out");
    const mirrorHost = new URL(agent.mirrorUrl).host;
    const registrySegment = origin.host.replace(":", "_");
    const mark = await origin.mark();
    await skopeoCopyToDir({ source: `${mirrorHost}/${registrySegment}/${REPO}:${TAG}`, destDir: dest, format: "oci", tag: TAG });
    assert.equal(await origin.servedBlobBytes({ since: mark }), 0, "served from the agent's store");
    const pulled = new Set(await readdir(join(dest, "blobs", "sha256")));
    const image = layout.images.find((i) => i.platform.architecture === "amd64");
    assert.ok(image);
    for (const d of [image.config, ...image.layers.map((l) => l.descriptor)])
      assert.ok(pulled.has(d.digest.slice("sha256:".length)), `${d.digest} pulled`);
  });

  it("an agent restarted on the same data dir serves what it had, without the origin", async () => {
    assert.ok(agent);
    const dataDir = agent.dataDir;
    restartedDataDir = dataDir;
    const port = Number(new URL(agent.mirrorUrl).port);
    const firstLog = agent.logFile;
    await agent.stop({ keepDataDir: true });
    assert.equal(await pathExists(dirname(firstLog)), false, "the stopped agent's log dir is removed");
    assert.equal(await pathExists(dataDir), true, "its data dir is kept for the next agent");
    agent = await ShoalAgent.start({ upstreams: [`${origin.host}=${origin.url}`], dataDir, mirrorPort: port });
    await containerd.removeImage(ref);
    const mark = await origin.mark();
    await containerd.pull(ref, { hostsDir, plainHttp: true });
    assert.equal(await origin.servedBlobBytes({ since: mark }), 0);
  });

  it("with the agent stopped, the same pull still succeeds (containerd falls back to the origin)", async () => {
    assert.ok(agent);
    const log = agent.logFile;
    await agent.stop();
    assert.equal(await pathExists(dirname(log)), false, "the agent's log dir is removed");
    assert.equal(await pathExists(restartedDataDir ?? ""), true, "a data dir the test passed in stays the test's to remove");
    agent = undefined;
    await containerd.removeImage(ref);
    const mark = await origin.mark();
    await containerd.pull(ref, { hostsDir, plainHttp: true });
    assert.ok((await containerd.listImages()).some((i) => i.ref === ref));
    assert.equal(await origin.servedBlobBytes({ since: mark }), amd64Blobs());
  });
});
