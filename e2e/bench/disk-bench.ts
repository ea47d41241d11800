// npm run bench:disk — disk used per node for images pulled through the agent: N generated images pulled
// by a real containerd through one agent, with the agent serving from containerd's content store (one copy)
// and without (two copies). Prints the agent's data dir and containerd's content dir as a share of the
// pulled blob bytes; asserts nothing. Needs root, Debian's docker-registry, skopeo and containerd.
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { generateImageLayout } from "../../pkg/imagegen/index.js";
import { Containerd, writeHostsToml } from "../support/containerd.js";
import { DockerRegistry } from "../support/docker-registry.js";
import { makeTempDir, removeTempDir } from "../support/process.js";
import { ShoalAgent } from "../support/shoal-agent.js";
import { skopeoPushLayout } from "../support/skopeo.js";
import { benchOptions, integerFlag } from "./bench-flags.js";

const MiB = 1024 * 1024;
const MB = 1e6;
/** After the last pull, how long the agent may take to drop its copies (it follows containerd's events). */
const SETTLE_TIMEOUT_MS = 30_000;
const SETTLE_POLL_MS = 200;

const USAGE = `Usage: npm run bench:disk -- [flags]

Pulls generated images one after the other with a real containerd through one agent, twice: with the
agent serving from containerd's content store and without. Prints the agent's data dir and containerd's
content dir as a share of the pulled bytes. Needs root, Debian's docker-registry, skopeo and containerd.

  --images N           images to pull (1-50; default 5)
  --image-mib MIB      each image's size (1-4096; default 32)
  --layers N           layers per image (1-64; default 3)
  --help`;

const { imageCount, imageMiB, layers } = benchOptions(USAGE, { images: "5", "image-mib": "32", layers: "3" }, (flags) => ({
  imageCount: integerFlag("images", flags.images, 1, 50),
  imageMiB: integerFlag("image-mib", flags["image-mib"], 1, 4096),
  layers: integerFlag("layers", flags.layers, 1, 64),
}));

interface Arm {
  readonly containerdContent: boolean;
  readonly pulledBlobBytes: number;
  readonly dataDirBytes: number;
  readonly contentDirBytes: number;
}

/** Bytes the files under `dir` occupy on disk (allocated blocks, as du counts them). */
async function diskBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).blocks * 512;
  }
  return total;
}

async function runArm(
  work: string,
  origin: DockerRegistry,
  refs: readonly string[],
  pulledBlobBytes: number,
  containerdContent: boolean,
): Promise<Arm> {
  const containerd = await Containerd.start({ namespace: "k8s.io" });
  let agent: ShoalAgent | undefined;
  try {
    agent = await ShoalAgent.start({
      upstreams: [`${origin.host}=${origin.url}`],
      ...(containerdContent ? { containerd: { socket: containerd.address, namespace: "k8s.io", contentDir: containerd.contentDir } } : {}),
    });
    const hostsDir = join(work, `hosts-${String(containerdContent)}`);
    await writeHostsToml(hostsDir, origin.host, { server: origin.url, mirror: agent.mirrorUrl });
    for (const ref of refs) {
      process.stderr.write(`  pull ${ref}\n`);
      await containerd.pull(ref, { hostsDir, plainHttp: true });
    }
    const deadline = Date.now() + SETTLE_TIMEOUT_MS;
    let dataDirBytes = await diskBytes(agent.dataDir);
    while (containerdContent && dataDirBytes > pulledBlobBytes * 0.01 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, SETTLE_POLL_MS));
      dataDirBytes = await diskBytes(agent.dataDir);
    }
    return { containerdContent, pulledBlobBytes, dataDirBytes, contentDirBytes: await diskBytes(containerd.contentDir) };
  } finally {
    await agent?.stop();
    await containerd.stop();
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("needs root (containerd)");
  const work = await makeTempDir("bench-disk");
  const origin = await DockerRegistry.start();
  try {
    const refs: string[] = [];
    let pulledBlobBytes = 0;
    for (let i = 0; i < imageCount; i++) {
      const tag = `v${i}`;
      const layout = await generateImageLayout({ dir: join(work, tag), seed: `bench-disk-${i}`, layers, totalBytes: imageMiB * MiB, tag });
      const image = layout.images[0];
      if (image === undefined) throw new Error("no image generated");
      pulledBlobBytes += image.imageBytes;
      const ref = `${origin.host}/bench/disk:${tag}`;
      await skopeoPushLayout({ layoutDir: layout.dir, tag, destination: ref });
      await removeTempDir(join(work, tag));
      refs.push(ref);
    }
    const arms: Arm[] = [];
    for (const containerdContent of [false, true]) {
      process.stderr.write(`--containerd-content=${String(containerdContent)}: ${imageCount} images of ${imageMiB} MiB\n`);
      arms.push(await runArm(work, origin, refs, pulledBlobBytes, containerdContent));
    }
    const lines = [
      "",
      `${imageCount} images, ${(pulledBlobBytes / MB).toFixed(1)} MB of manifests, configs and layers pulled by containerd through one agent`,
      "",
      `${"--containerd-content".padEnd(22)}${"agent data dir".padStart(16)}${"share".padStart(10)}${"containerd content".padStart(20)}${"disk / pulled".padStart(15)}`,
    ];
    for (const arm of arms) {
      lines.push(
        `${String(arm.containerdContent).padEnd(22)}${`${(arm.dataDirBytes / MB).toFixed(2)} MB`.padStart(16)}${`${((arm.dataDirBytes / arm.pulledBlobBytes) * 100).toFixed(2)} %`.padStart(10)}` +
          `${`${(arm.contentDirBytes / MB).toFixed(2)} MB`.padStart(20)}${`${((arm.dataDirBytes + arm.contentDirBytes) / arm.pulledBlobBytes).toFixed(3)} ×`.padStart(15)}`,
      );
    }
    process.stdout.write(`${lines.join("\n")}\n`);
  } finally {
    await origin.stop();
    await removeTempDir(work);
  }
}

await main();
