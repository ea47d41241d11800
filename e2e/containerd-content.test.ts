// One copy per node: agents serve from their node's containerd content store (real containerd 1.6 per
// node, Debian's docker-registry as the origin, `shoal controller` as the tracker, agents as processes on
// their own loopback addresses). Needs root (containerd's snapshotter mounts).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readdir, stat } from "node:fs/promises";
import { get } from "node:http";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { pullImage } from "../pkg/client/index.js";
import { generateImageLayout, type GeneratedImageLayout } from "../pkg/imagegen/index.js";
import { Containerd, writeHostsToml } from "./support/containerd.js";
import { DockerRegistry } from "./support/docker-registry.js";
import { makeTempDir, removeTempDir, runCommand, waitUntil } from "./support/process.js";
import { ShoalAgent } from "./support/shoal-agent.js";
import { ShoalController } from "./support/shoal-controller.js";
import { skopeoPushLayout } from "./support/skopeo.js";
import { TrackerProbe } from "./support/tracker-probe.js";

const NAMESPACE = "k8s.io";
/** Announcements, drops and withdrawals follow containerd's events and garbage collection: seconds. */
const SETTLE_TIMEOUT_MS = 60_000;
const MiB = 1024 * 1024;

interface Node {
  readonly name: string;
  readonly containerd: Containerd;
  readonly agent: ShoalAgent;
  readonly hostsDir: string;
}

const skip = process.getuid?.() !== 0 ? "containerd needs root" : false;

describe("agents serve from containerd's content store (one copy per node)", { skip }, () => {
  let work: string;
  let origin: DockerRegistry | undefined;
  let controller: ShoalController;
  let probe: TrackerProbe;
  const nodes: Node[] = [];
  const extraAgents: ShoalAgent[] = [];
  const servers: Server[] = [];

  async function image(
    name: string,
    layers: number,
    bytes: number,
  ): Promise<{ layout: GeneratedImageLayout; ref: string; blobs: string[]; blobBytes: number }> {
    const layout = await generateImageLayout({
      dir: join(work, name),
      seed: `e2e-containerd-${name}`,
      layers,
      totalBytes: bytes,
      tag: "v1",
    });
    const platform = layout.images[0];
    assert.ok(platform);
    const blobs = [platform.config.digest, ...platform.layers.map((l) => l.descriptor.digest)];
    return { layout, ref: `${originHost()}/${name}/app:v1`, blobs, blobBytes: platform.config.size + platform.layerBytes };
  }

  function originHost(): string {
    assert.ok(origin);
    return origin.host;
  }

  async function ownBlobs(agent: ShoalAgent): Promise<Set<string>> {
    return new Set((await readdir(join(agent.dataDir, "blobs", "sha256"))).filter((n) => !n.includes(".")).map((n) => `sha256:${n}`));
  }

  async function holdersInclude(digests: readonly string[], node: string): Promise<boolean> {
    for (const digest of digests) if (!(await probe.holders(digest)).includes(node)) return false;
    return true;
  }

  before(async () => {
    work = await makeTempDir("e2e-containerd-content");
    origin = await DockerRegistry.start();
    controller = await ShoalController.start();
    probe = await TrackerProbe.open(controller.trackerAddress);
    for (const [i, name] of ["node-a", "node-b", "node-c"].entries()) {
      const containerd = await Containerd.start({ namespace: NAMESPACE });
      // node-b reads through containerd's API; the others from the content directory (the chart's fast path).
      const agent = await ShoalAgent.start({
        host: `127.0.0.${31 + i}`,
        tracker: controller.trackerAddress,
        nodeName: name,
        upstreams: [`${originHost()}=${origin.url}`],
        containerd: {
          socket: containerd.address,
          namespace: NAMESPACE,
          ...(name === "node-b" ? {} : { contentDir: containerd.contentDir }),
        },
        extraArgs: ["--upload-rate", "200MB"],
      });
      const hostsDir = join(work, `hosts-${name}`);
      await writeHostsToml(hostsDir, originHost(), { server: origin.url, mirror: agent.mirrorUrl });
      nodes.push({ name, containerd, agent, hostsDir });
    }
  });

  after(async () => {
    for (const server of servers) server.close();
    await Promise.all([...nodes.map((n) => n.agent), ...extraAgents].map((a) => a.stop().catch(() => undefined)));
    await Promise.all(nodes.map((n) => n.containerd.stop().catch(() => undefined)));
    await probe.close().catch(() => undefined);
    await controller.stop().catch(() => undefined);
    await origin?.stop().catch(() => undefined);
    await removeTempDir(work);
  });

  it("a pull through the agent leaves the blobs in containerd only; another node's pull is served from that content", async (t) => {
    const [a, b] = nodes;
    assert.ok(a && b && origin);
    const img = await image("pulled", 3, 24 * MiB);
    await skopeoPushLayout({ layoutDir: img.layout.dir, tag: "v1", destination: img.ref });
    await a.containerd.pull(img.ref, { hostsDir: a.hostsDir, plainHttp: true });
    await waitUntil(async () => [...(await ownBlobs(a.agent))].every((d) => !img.blobs.includes(d)), {
      timeoutMs: SETTLE_TIMEOUT_MS,
      what: "node-a's agent to drop its copies of what containerd committed",
    });
    assert.ok((await a.agent.metric("shoal_containerd_own_copies_dropped_total")) >= img.blobs.length);
    const dataBytes = await diskBytes(a.agent.dataDir);
    const share = dataBytes / img.blobBytes;
    t.diagnostic(
      `node-a data dir after the pull: ${dataBytes} bytes on disk = ${(share * 100).toFixed(3)} % of the image's ${img.blobBytes} blob bytes`,
    );
    assert.ok(share <= 0.01, `the data dir holds ${(share * 100).toFixed(2)} % of the pulled bytes (goal ≤ 1 %)`);
    await waitUntil(() => holdersInclude(img.blobs, a.name), { timeoutMs: SETTLE_TIMEOUT_MS, what: "node-a announced as holder" });

    const servedBefore = await a.agent.metric("shoal_containerd_served_bytes_total");
    const mark = await origin.mark();
    await b.containerd.pull(img.ref, { hostsDir: b.hostsDir, plainHttp: true });
    assert.equal(await origin.servedBlobBytes({ since: mark }), 0, "no blob byte from the origin");
    const served = (await a.agent.metric("shoal_containerd_served_bytes_total")) - servedBefore;
    assert.ok(served >= img.blobBytes, `node-a served ${served} bytes from containerd's content store for ${img.blobBytes} blob bytes`);
  });

  it("`ctr images rm` and garbage collection while a blob is read: the read completes (lease), then the blob is withdrawn and fetched elsewhere", async () => {
    const [a, , c] = nodes;
    assert.ok(a && c && origin);
    const img = await image("collected", 1, 48 * MiB);
    await skopeoPushLayout({ layoutDir: img.layout.dir, tag: "v1", destination: img.ref });
    await a.containerd.pull(img.ref, { hostsDir: a.hostsDir, plainHttp: true });
    const layer = img.blobs[1];
    assert.ok(layer);
    await waitUntil(async () => !(await ownBlobs(a.agent)).has(layer), {
      timeoutMs: SETTLE_TIMEOUT_MS,
      what: "node-a to hold the layer in containerd only",
    });
    await waitUntil(() => holdersInclude([layer], a.name), { timeoutMs: SETTLE_TIMEOUT_MS, what: "node-a announced as holder" });

    // A reader that takes one chunk, then stops reading while the image is removed and collected.
    const body = await openSlowRead(`${a.agent.mirrorUrl}/v2/collected/app/blobs/${layer}?ns=${encodeURIComponent(originHost())}`);
    await a.containerd.removeImage(img.ref);
    assert.ok((await a.containerd.contentDigests()).includes(layer), "garbage collection left the leased blob");
    const received = await body.finish();
    assert.equal(`sha256:${createHash("sha256").update(received).digest("hex")}`, layer, "the read completed with the right bytes");

    await waitUntil(async () => !(await a.containerd.contentDigests()).includes(layer), {
      timeoutMs: SETTLE_TIMEOUT_MS,
      what: "garbage collection once the lease is gone",
    });
    await waitUntil(async () => !(await probe.holders(layer)).includes(a.name), { timeoutMs: SETTLE_TIMEOUT_MS, what: "node-a withdrawn" });
    const servedBefore = await a.agent.metric("shoal_containerd_served_bytes_total");
    await c.containerd.pull(img.ref, { hostsDir: c.hostsDir, plainHttp: true });
    assert.equal(await a.agent.metric("shoal_containerd_served_bytes_total"), servedBefore, "nothing was asked of node-a any more");
  });

  it("containerd restarted while the agent runs: it reconnects, keeps announcing, and follows new content", async () => {
    const [, , c] = nodes;
    assert.ok(c);
    const before = await c.containerd.contentDigests();
    const announced = before.filter((d) => d.length > 0).slice(0, 3);
    await c.containerd.restart();
    const img = await image("after-restart", 2, 4 * MiB);
    await skopeoPushLayout({ layoutDir: img.layout.dir, tag: "v1", destination: img.ref });
    await c.containerd.pull(img.ref, { hostsDir: c.hostsDir, plainHttp: true });
    await waitUntil(async () => [...(await ownBlobs(c.agent))].every((d) => !img.blobs.includes(d)), {
      timeoutMs: SETTLE_TIMEOUT_MS,
      what: "the agent to follow containerd's events after the restart (own copies dropped)",
    });
    assert.equal(await c.agent.metric("shoal_containerd_connected"), 1);
    const messages = (await logOf(c.agent)).map((l) => l.msg ?? "");
    assert.ok(
      messages.some((m) => m.startsWith("lost containerd")),
      "the agent noticed containerd going away",
    );
    assert.equal(messages.filter((m) => m.startsWith("containerd content store connected")).length, 2, "and connected again");
    await waitUntil(() => holdersInclude([...announced, ...img.blobs], c.name), {
      timeoutMs: SETTLE_TIMEOUT_MS,
      what: "node-c announcing old and new content",
    });
  });

  it("a missing or refusing containerd socket: a clear log, and the agent serves from its own store", async () => {
    assert.ok(origin);
    const refusing = join(work, "refusing.sock");
    const server = createServer((socket) => socket.destroy());
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(refusing, resolve));
    const img = await image("no-containerd", 2, 4 * MiB);
    await skopeoPushLayout({ layoutDir: img.layout.dir, tag: "v1", destination: img.ref });
    for (const [socket, expected] of [
      [join(work, "missing.sock"), /does not exist/],
      [refusing, /unavailable/],
    ] as const) {
      const agent = await ShoalAgent.start({ upstreams: [`${originHost()}=${origin.url}`], containerd: { socket, namespace: NAMESPACE } });
      extraAgents.push(agent);
      await waitUntil(
        async () =>
          (await logOf(agent)).some(
            (l) => l.msg?.startsWith("containerd content store unavailable") === true && expected.test(l.problem ?? ""),
          ),
        {
          timeoutMs: SETTLE_TIMEOUT_MS,
          what: `the agent to log why ${socket} is unusable`,
        },
      );
      const pulled = await pullImage({
        baseUrl: agent.mirrorUrl,
        ns: originHost(),
        name: "no-containerd/app",
        reference: "v1",
        signal: AbortSignal.timeout(SETTLE_TIMEOUT_MS),
      });
      assert.equal(pulled.digest, img.layout.root.digest);
      // The response ends with its last byte; the blob is committed (verified, renamed) just after that.
      await waitUntil(
        async () => {
          const own = await ownBlobs(agent);
          return img.blobs.every((digest) => own.has(digest));
        },
        { timeoutMs: SETTLE_TIMEOUT_MS, what: `every pulled blob in the agent's own store (${img.blobs.join(", ")})` },
      );
      assert.equal(await agent.metric("shoal_containerd_connected"), 0);
    }
  });

  it("an image `ctr images import`ed on one node feeds another node's pull with the origin down", async () => {
    const [, b, c] = nodes;
    assert.ok(b && c && origin);
    const img = await image("imported", 2, 16 * MiB);
    const tarFile = join(work, "imported.tar");
    await runCommand("tar", ["-C", img.layout.dir, "-cf", tarFile, "."], { timeoutMs: 60_000 });
    await c.containerd.importImage(tarFile, img.ref);
    const all = [img.layout.root.digest, ...img.blobs];
    await waitUntil(() => holdersInclude(all, c.name), {
      timeoutMs: SETTLE_TIMEOUT_MS,
      what: "node-c announcing the imported image (hashed in the background)",
    });
    await origin.stop();
    origin = undefined;
    const servedBefore = await c.agent.metric("shoal_containerd_served_bytes_total");
    const byDigest = img.ref.replace(/:v1$/, `@${img.layout.root.digest}`);
    await b.containerd.pull(byDigest, { hostsDir: b.hostsDir, plainHttp: true });
    assert.ok(
      (await b.containerd.listImages()).some((i) => i.ref === byDigest),
      "node-b has the image",
    );
    const served = (await c.agent.metric("shoal_containerd_served_bytes_total")) - servedBefore;
    assert.ok(served >= img.blobBytes, `node-c served ${served} bytes from containerd for ${img.blobBytes} blob bytes`);
  });
});

/** Bytes the files under `dir` occupy on disk (allocated blocks, as du counts them). */
/** Bytes on disk under `dir`. A file gone between the listing and its stat (the agent's atomic writes rename their temporary files) holds none. */
async function diskBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    try {
      total += (await stat(join(entry.parentPath, entry.name))).blocks * 512;
    } catch (error: unknown) {
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    }
  }
  return total;
}

async function logOf(agent: ShoalAgent): Promise<{ msg?: string; problem?: string }[]> {
  const { readFile } = await import("node:fs/promises");
  return (await readFile(agent.logFile, "utf8"))
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as { msg?: string; problem?: string });
}

/** GETs `url`, takes the first chunk and stops reading; `finish` reads the rest. */
function openSlowRead(url: string): Promise<{ finish: () => Promise<Buffer> }> {
  return new Promise((resolve, reject) => {
    const request = get(url, (response) => {
      if (response.statusCode !== 200) {
        reject(new Error(`GET ${url}: ${response.statusCode ?? "no status"}`));
        response.resume();
        return;
      }
      const chunks: Buffer[] = [];
      response.once("data", (chunk: Buffer) => {
        chunks.push(chunk);
        response.pause();
        resolve({
          finish: () =>
            new Promise<Buffer>((done, failed) => {
              response.on("data", (more: Buffer) => chunks.push(more));
              response.once("end", () => {
                done(Buffer.concat(chunks));
              });
              response.once("error", failed);
              response.resume();
            }),
        });
      });
      response.once("error", reject);
    });
    request.once("error", reject);
  });
}
