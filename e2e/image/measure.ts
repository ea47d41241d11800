// Figures of the built image, printed (a benchmark script, not a test): its size (uncompressed and
// as a registry stores it), and for the agent container run exactly as the chart renders it: the time
// from creating the container to its readiness probe passing, the CPU it used to get there, and its
// resident memory after idling (the node process's VmRSS/VmHWM and the container's cgroup).
//   npm run bench:image [-- --runs N --idle-seconds S]
// Needs what the container suites need (root, Podman's API in DOCKER_HOST; e2e/containers/README.md).
import { mkdtemp, readFile, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ChartCluster } from "../containers/chart-cluster.js";
import { SHOAL_IMAGE, buildImages } from "../containers/images.js";
import { containerState, containerSuiteUnavailable } from "../containers/runtime.js";
import { type ProcStats, procStats } from "../../pkg/metrics/index.js";
import { removeTempDir, runCommand } from "../support/process.js";

const READY_TIMEOUT_MS = 60_000;

interface ProcessFigures extends ProcStats {
  /** RssAnon: heap and stacks, this process's own. */
  readonly anonBytes: number;
  /** RssFile: mapped files (mostly the Node binary's pages), shared and reclaimable. */
  readonly fileBytes: number;
  readonly cgroupBytes: number | undefined;
}

async function processFigures(pid: number): Promise<ProcessFigures> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kib = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status)?.[1] ?? NaN) * 1024;
  return { ...(await procStats(pid)), anonBytes: kib("RssAnon"), fileBytes: kib("RssFile"), cgroupBytes: await cgroupMemory(pid) };
}

/** The container's memory as its cgroup counts it (v2 memory.current, v1 memory.usage_in_bytes). */
async function cgroupMemory(pid: number): Promise<number | undefined> {
  const lines = (await readFile(`/proc/${pid}/cgroup`, "utf8")).split("\n");
  const v1 = lines.find((l) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(l));
  const candidates = v1 !== undefined ? [`/sys/fs/cgroup/memory${v1.slice(v1.lastIndexOf(":") + 1)}/memory.usage_in_bytes`] : [];
  const v2 = lines.find((l) => l.startsWith("0::"));
  if (v2 !== undefined)
    candidates.push(`/sys/fs/cgroup${v2.slice(3)}/memory.current`, `/sys/fs/cgroup/unified${v2.slice(3)}/memory.current`);
  for (const file of candidates) {
    try {
      return Number((await readFile(file, "utf8")).trim());
    } catch {
      // Not this hierarchy.
    }
  }
  return undefined;
}

async function imageSizes(): Promise<{ bytes: number; compressedLayers: number[] }> {
  const { stdout } = await runCommand("podman", ["image", "inspect", "--format", "{{.Size}}", SHOAL_IMAGE], { timeoutMs: 30_000 });
  const dir = await mkdtemp(join(tmpdir(), "shoal-image-save-"));
  try {
    await runCommand("podman", ["save", "--quiet", "--format", "docker-dir", "--compress", "-o", join(dir, "image"), SHOAL_IMAGE], {
      timeoutMs: 120_000,
    });
    const manifest = JSON.parse(await readFile(join(dir, "image", "manifest.json"), "utf8")) as { layers: { size: number }[] };
    // Check against the files: the manifest names what a registry would serve.
    const files = await readdir(join(dir, "image"));
    if (files.length < manifest.layers.length) throw new Error("podman save wrote fewer blobs than the manifest lists");
    await Promise.all(files.map((f) => stat(join(dir, "image", f))));
    return { bytes: Number(stdout.trim()), compressedLayers: manifest.layers.map((l) => l.size) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: "string", default: "5" }, "idle-seconds": { type: "string", default: "10" } } });
  const runs = Number(values.runs);
  const idleMs = Number(values["idle-seconds"]) * 1000;
  const unavailable = await containerSuiteUnavailable();
  if (unavailable !== false) throw new Error(unavailable);
  await buildImages();
  const sizes = await imageSizes();
  console.log(
    `image ${SHOAL_IMAGE}: ${mb(sizes.bytes)} uncompressed; ${mb(sizes.compressedLayers.reduce((a, b) => a + b, 0))} compressed in ${sizes.compressedLayers.length} layers (${sizes.compressedLayers.map(mb).join(", ")})`,
  );
  const work = await mkdtemp(join(tmpdir(), "shoal-image-measure-"));
  const cluster = await ChartCluster.start({ nodes: 1, work, containerdConfig: true, deferAgents: true });
  try {
    const [node] = cluster.agents;
    if (node === undefined) throw new Error("no agent pod");
    console.log(`agent container as the chart renders it; ${runs} runs, ${idleMs / 1000} s idle each`);
    console.log("run  ready ms  cpu-s to ready  RSS idle (anon + file)    VmHWM     cgroup");
    for (let run = 1; run <= runs; run++) {
      const { readyMs } = await cluster.startAgent(node, READY_TIMEOUT_MS);
      const { pid } = await containerState(node.pod.container("agent").getId());
      const atReady = await processFigures(pid);
      await new Promise((resolve) => setTimeout(resolve, idleMs));
      const idle = await processFigures(pid);
      const memory = `${mb(idle.rssBytes)} (${mb(idle.anonBytes)} + ${mb(idle.fileBytes)})`;
      console.log(
        `${String(run).padStart(3)}  ${readyMs.toFixed(0).padStart(8)}  ${atReady.cpuSeconds.toFixed(2).padStart(14)}  ${memory.padEnd(26)} ${mb(idle.peakRssBytes).padStart(8)}  ${idle.cgroupBytes === undefined ? "n/a" : mb(idle.cgroupBytes)}`,
      );
      await node.pod.stopContainer("agent");
    }
    const leader = await cluster.waitLeader();
    const { pid } = await containerState(leader.container("controller").getId());
    const controller = await processFigures(pid);
    console.log(
      `controller (leader) after the runs: RSS ${mb(controller.rssBytes)} (${mb(controller.anonBytes)} + ${mb(controller.fileBytes)}), VmHWM ${mb(controller.peakRssBytes)}, cgroup ${controller.cgroupBytes === undefined ? "n/a" : mb(controller.cgroupBytes)}`,
    );
  } finally {
    await cluster.destroy();
    await removeTempDir(work);
  }
}

await main();
