import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { pino } from "pino";
import { parseOptions } from "../../pkg/config/index.js";
import { type GeneratedImageLayout, generateImageLayout } from "../../pkg/imagegen/index.js";
import { MEDIA_TYPE_OCI_EMPTY, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST } from "../../pkg/oci/index.js";
import { LayoutRegistry } from "../../pkg/origin/index.js";
import { type RunningAgent, startAgent } from "../agent/agent.js";
import { agentOptionSpecs } from "../agent/options.js";

const MAIN = fileURLToPath(new URL("../shoal/main.js", import.meta.url));
const run = promisify(execFile);
const REF_NAME = "org.opencontainers.image.ref.name";
const ARTIFACT_TYPE = "application/vnd.example.model.v1";

async function shoal(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [MAIN, ...args], { timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

interface Blob {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly annotations?: Record<string, string>;
}

/** A non-image artifact as ORAS writes one: empty config, artifactType, layers of arbitrary media types. */
async function writeArtifactLayout(dir: string, tag: string): Promise<{ manifest: Blob }> {
  const blobs = join(dir, "blobs", "sha256");
  await mkdir(blobs, { recursive: true });
  const put = async (mediaType: string, data: Buffer, annotations?: Record<string, string>): Promise<Blob> => {
    const hex = createHash("sha256").update(data).digest("hex");
    await writeFile(join(blobs, hex), data);
    return { mediaType, digest: `sha256:${hex}`, size: data.length, ...(annotations ? { annotations } : {}) };
  };
  const config = await put(MEDIA_TYPE_OCI_EMPTY, Buffer.from("{}"));
  const layers = [
    await put("application/vnd.example.weights.v1", randomBytes(3 * 1024 * 1024 + 17), { "org.opencontainers.image.title": "weights.bin" }),
    await put("application/json", Buffer.from(JSON.stringify({ vocab: 32000 })), { "org.opencontainers.image.title": "tokenizer.json" }),
    await put("application/octet-stream", randomBytes(1024), { "org.opencontainers.image.title": "README" }),
  ];
  const manifest = await put(
    MEDIA_TYPE_OCI_MANIFEST,
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_MANIFEST, artifactType: ARTIFACT_TYPE, config, layers })),
  );
  await writeFile(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await writeFile(
    join(dir, "index.json"),
    JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPE_OCI_INDEX, manifests: [{ ...manifest, annotations: { [REF_NAME]: tag } }] }),
  );
  return { manifest };
}

async function readIndex(
  dir: string,
): Promise<{ manifests: (Blob & { artifactType?: string; platform?: { os: string; architecture: string } })[] }> {
  return JSON.parse(await readFile(join(dir, "index.json"), "utf8")) as {
    manifests: (Blob & { artifactType?: string; platform?: { os: string; architecture: string } })[];
  };
}

/** Every blob of the fetched layout is byte-identical to the source's blob of that name; returns their names. */
async function assertBlobsMatch(fetched: string, source: string): Promise<string[]> {
  const names = (await readdir(join(fetched, "blobs", "sha256"))).sort();
  for (const name of names) {
    const [got, want] = await Promise.all([
      readFile(join(fetched, "blobs", "sha256", name)),
      readFile(join(source, "blobs", "sha256", name)),
    ]);
    assert.ok(got.equals(want), `blob ${name} differs from the source`);
  }
  return names;
}

describe("shoal fetch through an agent", () => {
  let work: string;
  let image: GeneratedImageLayout;
  let imageOrigin: LayoutRegistry;
  let artifactOrigin: LayoutRegistry;
  let artifactManifest: Blob;
  let agent: RunningAgent;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "shoal-fetch-"));
    image = await generateImageLayout({
      dir: join(work, "image"),
      seed: "fetch-test",
      layers: 4,
      totalBytes: 6_000_000,
      platforms: ["linux/amd64", "linux/arm64"],
      tag: "v1",
    });
    imageOrigin = await LayoutRegistry.start({ dir: image.dir });
    artifactManifest = (await writeArtifactLayout(join(work, "artifact"), "model-1")).manifest;
    artifactOrigin = await LayoutRegistry.start({ dir: join(work, "artifact") });
    const upstreams = [imageOrigin, artifactOrigin].flatMap((o) => ["--upstream", `${o.host}=${o.url}`]);
    const options = parseOptions(
      agentOptionSpecs,
      ["--mirror-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--data-dir", join(work, "agent"), ...upstreams],
      {},
    ).options;
    agent = await startAgent(options, pino({ level: process.env.SHOAL_TEST_LOG ?? "silent" }));
  });

  after(async () => {
    await agent.stop(0);
    await imageOrigin.close();
    await artifactOrigin.close();
    await rm(work, { recursive: true, force: true });
  });

  it("fetches one platform of a multi-layer image into an OCI layout, byte for byte", async () => {
    const to = join(work, "out-image");
    const result = await shoal([
      "fetch",
      `${imageOrigin.host}/team/app:v1`,
      "--to",
      to,
      "--agent",
      agent.mirrorUrl,
      "--platform",
      "linux/arm64",
    ]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /every digest verified/);
    const arm = image.images.find((i) => i.platform.architecture === "arm64")!;
    assert.deepEqual(JSON.parse(await readFile(join(to, "oci-layout"), "utf8")), { imageLayoutVersion: "1.0.0" });
    const index = await readIndex(to);
    assert.equal(index.manifests.length, 1);
    assert.equal(index.manifests[0]!.digest, arm.manifest.digest);
    assert.deepEqual(index.manifests[0]!.platform, { architecture: "arm64", os: "linux" });
    assert.equal(index.manifests[0]!.annotations?.[REF_NAME], "v1");
    const names = await assertBlobsMatch(to, image.dir);
    const expected = [arm.manifest, arm.config, ...arm.layers.map((l) => l.descriptor)].map((d) => d.digest.slice("sha256:".length));
    assert.deepEqual(names, [...new Set(expected)].sort(), "exactly the chosen platform's manifest, config and layers");
    assert.deepEqual(await readdir(to).then((entries) => entries.sort()), ["blobs", "index.json", "oci-layout"], "no temp files left");
  });

  it("fetches a non-image artifact by tag and by digest, adding both to one layout", async () => {
    const to = join(work, "out-artifact");
    const byTag = await shoal(["fetch", `${artifactOrigin.host}/models/llm:model-1`, "--to", to, "--agent", agent.mirrorUrl]);
    assert.equal(byTag.code, 0, byTag.stderr);
    const byDigest = await shoal([
      "fetch",
      `${artifactOrigin.host}/models/llm@${artifactManifest.digest}`,
      "--to",
      to,
      "--agent",
      agent.mirrorUrl,
    ]);
    assert.equal(byDigest.code, 0, byDigest.stderr);
    const index = await readIndex(to);
    assert.equal(index.manifests.length, 1, "the same manifest is recorded once");
    assert.equal(index.manifests[0]!.digest, artifactManifest.digest);
    assert.equal(index.manifests[0]!.artifactType, ARTIFACT_TYPE);
    assert.equal(index.manifests[0]!.annotations?.[REF_NAME], "model-1");
    const names = await assertBlobsMatch(to, join(work, "artifact"));
    assert.deepEqual(names, (await readdir(join(work, "artifact", "blobs", "sha256"))).sort(), "every blob of the artifact");

    const image = await shoal(["fetch", `${imageOrigin.host}/team/app:v1`, "--to", to, "--agent", agent.mirrorUrl]);
    assert.equal(image.code, 0, image.stderr);
    const both = await readIndex(to);
    assert.deepEqual(both.manifests.map((m) => m.annotations?.[REF_NAME]).sort(), ["model-1", "v1"]);
  });

  it("refuses bad usage with exit code 2", async () => {
    const cases: [string[], RegExp][] = [
      [["fetch", "--to", join(work, "x")], /expected a reference/],
      [["fetch", "127.0.0.1:1/Bad Name:v1", "--to", join(work, "x")], /invalid reference .*invalid repository name/],
      [["fetch", "127.0.0.1:1/app@sha256:abc", "--to", join(work, "x")], /invalid reference/],
      [["fetch", "127.0.0.1:1/app:v1"], /--to DIR \(SHOAL_TO\) is required/],
      [["fetch", "127.0.0.1:1/app:v1", "--to", join(work, "x"), "--agent", "ftp://x"], /--agent \(SHOAL_AGENT\)/],
      [["fetch", "127.0.0.1:1/app:v1", "--to", join(work, "x"), "--platform", "amd64"], /--platform .*os\/arch/],
    ];
    for (const [args, pattern] of cases) {
      const result = await shoal(args);
      assert.equal(result.code, 2, `${args.join(" ")} → ${result.code} ${result.stderr}`);
      assert.match(result.stderr, pattern);
      assert.doesNotMatch(result.stderr, /\n\s+at /, "no stack trace");
    }
  });

  it("fails with exit code 1 and a clear message: unreachable agent, unknown tag, unmirrored registry, a directory that is no layout", async () => {
    const notLayout = join(work, "not-a-layout");
    await mkdir(notLayout, { recursive: true });
    await writeFile(join(notLayout, "precious.txt"), "keep me");
    const closedPort = "http://127.0.0.1:1";
    const cases: [string[], RegExp][] = [
      [
        ["fetch", `${imageOrigin.host}/team/app:v1`, "--to", join(work, "u"), "--agent", closedPort],
        /cannot reach the agent at http:\/\/127\.0\.0\.1:1 \(ECONNREFUSED\)/,
      ],
      [
        ["fetch", `${imageOrigin.host}/team/app:nope`, "--to", join(work, "u"), "--agent", agent.mirrorUrl],
        /not found through the agent .*HTTP 404/,
      ],
      [
        ["fetch", "unmirrored.example/team/app:v1", "--to", join(work, "u"), "--agent", agent.mirrorUrl],
        /does the agent mirror unmirrored\.example/,
      ],
      [
        ["fetch", `${imageOrigin.host}/team/app:v1`, "--to", notLayout, "--agent", agent.mirrorUrl],
        /neither empty nor an OCI image layout/,
      ],
    ];
    for (const [args, pattern] of cases) {
      const result = await shoal(args);
      assert.equal(result.code, 1, `${args.join(" ")} → ${result.code} ${result.stderr}`);
      assert.match(result.stderr, pattern);
      assert.doesNotMatch(result.stderr, /\n\s+at /, "no stack trace");
    }
    assert.deepEqual(await readdir(notLayout), ["precious.txt"], "a foreign directory is left alone");
  });
});
