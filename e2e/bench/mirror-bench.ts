// npm run bench:mirror — one large blob on loopback: straight from docker-registry vs. through the agent
// (cold pull-through, then cache hits); time to first byte; the agent's peak RSS and CPU.
// Prints figures; asserts nothing. Needs Debian's docker-registry.
import { createReadStream } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { Agent, type Dispatcher } from "undici";
import { writeRandomBlob } from "../../pkg/imagegen/index.js";
import { DockerRegistry } from "../support/docker-registry.js";
import { makeTempDir, removeTempDir } from "../support/process.js";
import { ShoalAgent } from "../support/shoal-agent.js";
import { benchOptions, bytesFlag, integerFlag } from "./bench-flags.js";
import { procStats } from "../../pkg/metrics/index.js";

const REPO = "bench/blob";
const MB = 1e6;
/** USER_HZ: /proc reports CPU time in these ticks on every Linux this runs on. */
const CLOCK_TICKS_PER_SECOND = 100;

const USAGE = `Usage: npm run bench:mirror -- [flags]

One large blob on loopback: straight from docker-registry, then through the agent (a cold pull-through,
then cache hits); time to first byte; the agent's peak RSS and CPU. Needs Debian's docker-registry.

  --size SIZE          the blob (64KiB to 64GiB; default 1GiB)
  --runs N             transfers of each kind, the median is reported (1-100; default 3)
  --ttfb-samples N     requests for the time to first byte (1-10000; default 50)
  --json FILE          write the result as JSON
  --help`;

const { size, sizeText, runs, ttfbSamples, json } = benchOptions(
  USAGE,
  { size: "1GiB", runs: "3", "ttfb-samples": "50", json: undefined },
  (flags) => ({
    size: bytesFlag("size", flags.size, 64 * 1024, 64 * 1024 ** 3),
    runs: integerFlag("runs", flags.runs, 1, 100),
    ttfbSamples: integerFlag("ttfb-samples", flags["ttfb-samples"], 1, 10_000),
    sizeText: flags.size ?? "",
    json: flags.json,
  }),
);

const client = new Agent({ keepAliveTimeout: 30_000 });

interface Transfer {
  readonly seconds: number;
  readonly ttfbMs: number;
  readonly bytes: number;
}

/** GETs a URL, counting bytes without hashing (the agent verifies; the client must not be the bottleneck). */
async function get(url: string): Promise<Transfer> {
  const u = new URL(url);
  const started = performance.now();
  const res = await client.request({ origin: u.origin, path: u.pathname + u.search, method: "GET" });
  const ttfbMs = performance.now() - started;
  if (res.statusCode !== 200) throw new Error(`${url}: HTTP ${res.statusCode} ${await res.body.text()}`);
  let bytes = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) bytes += chunk.length;
  return { seconds: (performance.now() - started) / 1000, ttfbMs, bytes };
}

/** Time to the first body byte of a full GET, then the rest is dropped. */
async function ttfb(url: string): Promise<number> {
  const u = new URL(url);
  const controller = new AbortController();
  const started = performance.now();
  const res: Dispatcher.ResponseData = await client.request({
    origin: u.origin,
    path: u.pathname + u.search,
    method: "GET",
    signal: controller.signal,
  });
  for await (const _chunk of res.body as AsyncIterable<Buffer>) break;
  const ms = performance.now() - started;
  controller.abort();
  res.body.destroy();
  return ms;
}

/** CPU-seconds per thread name (/proc/PID/task/TID/comm) of a process: where a transfer's CPU goes. */
async function threadCpuSeconds(pid: number): Promise<Map<string, number>> {
  const byName = new Map<string, number>();
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    try {
      const name = (await readFile(`/proc/${pid}/task/${tid}/comm`, "utf8")).trim();
      const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      byName.set(name, (byName.get(name) ?? 0) + (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND);
    } catch {
      // The thread ended between readdir and read.
    }
  }
  return byName;
}

function threadCpuDelta(after: Map<string, number>, before: Map<string, number>, gigabytes: number): Record<string, number> {
  const delta: Record<string, number> = {};
  for (const [name, seconds] of after) {
    const perGB = (seconds - (before.get(name) ?? 0)) / gigabytes;
    if (perGB >= 0.005) delta[name] = Number(perGB.toFixed(2));
  }
  return delta;
}

/** Busy and total CPU-seconds of the whole machine, all cores (/proc/stat): what else competed for the CPU. */
async function machineCpuSeconds(): Promise<{ busy: number; total: number }> {
  const line = (await readFile("/proc/stat", "utf8")).split("\n")[0] ?? "";
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  const total = ticks.reduce((sum, t) => sum + t, 0);
  // idle and iowait are fields 4 and 5.
  const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0);
  return { busy: (total - idle) / CLOCK_TICKS_PER_SECOND, total: total / CLOCK_TICKS_PER_SECOND };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

async function upload(origin: DockerRegistry, file: string, digest: string): Promise<void> {
  const start = await client.request({ origin: origin.url, path: `/v2/${REPO}/blobs/uploads/`, method: "POST" });
  await start.body.dump();
  const location = start.headers.location;
  if (start.statusCode !== 202 || typeof location !== "string") throw new Error(`upload start: HTTP ${start.statusCode}`);
  const target = new URL(location, origin.url);
  target.searchParams.set("digest", digest);
  const bytes = (await stat(file)).size;
  const put = await client.request({
    origin: target.origin,
    path: target.pathname + target.search,
    method: "PUT",
    headers: { "content-type": "application/octet-stream", "content-length": String(bytes) },
    body: createReadStream(file),
  });
  await put.body.dump();
  if (put.statusCode !== 201) throw new Error(`upload: HTTP ${put.statusCode}`);
}

async function main(): Promise<void> {
  const work = await makeTempDir("bench-mirror");
  let origin: DockerRegistry | undefined;
  let agent: ShoalAgent | undefined;
  try {
    console.error(`generating a ${sizeText} blob…`);
    const blob = await writeRandomBlob({ file: join(work, "blob"), seed: "bench-mirror", bytes: size });
    origin = await DockerRegistry.start();
    await upload(origin, join(work, "blob"), blob.digest);
    const direct = `${origin.url}/v2/${REPO}/blobs/${blob.digest}`;
    await get(direct); // page cache warm for a fair comparison
    const registryBeforeDirect = await procStats(origin.pid);
    const clientBeforeDirect = process.cpuUsage();
    const directRuns: Transfer[] = [];
    for (let i = 0; i < runs; i++) directRuns.push(await get(direct));
    const registryAfterDirect = await procStats(origin.pid);
    const clientDirect = process.cpuUsage(clientBeforeDirect);
    const directTtfb: number[] = [];
    for (let i = 0; i < ttfbSamples; i++) directTtfb.push(await ttfb(direct));

    agent = await ShoalAgent.start({ upstreams: [`${origin.host}=${origin.url}`] });
    const mirrored = `${agent.mirrorUrl}/v2/${REPO}/blobs/${blob.digest}?ns=${encodeURIComponent(origin.host)}`;
    const before = await procStats(agent.daemon.pid);
    const threadsBefore = await threadCpuSeconds(agent.daemon.pid);
    const registryBeforeCold = await procStats(origin.pid);
    const machineBeforeCold = await machineCpuSeconds();
    const loadBeforeCold = loadavg()[0] ?? Number.NaN;
    const clientBeforeCold = process.cpuUsage();
    const cold = await get(mirrored);
    const clientCold = process.cpuUsage(clientBeforeCold);
    const machineAfterCold = await machineCpuSeconds();
    const registryAfterCold = await procStats(origin.pid);
    const afterCold = await procStats(agent.daemon.pid);
    const threadsAfterCold = await threadCpuSeconds(agent.daemon.pid);
    const hitRuns: Transfer[] = [];
    for (let i = 0; i < runs; i++) hitRuns.push(await get(mirrored));
    const afterHits = await procStats(agent.daemon.pid);
    const hitTtfb: number[] = [];
    for (let i = 0; i < ttfbSamples; i++) hitTtfb.push(await ttfb(mirrored));
    const end = await procStats(agent.daemon.pid);

    const directSeconds = median(directRuns.map((r) => r.seconds));
    const hitSeconds = median(hitRuns.map((r) => r.seconds));
    const gigabytes = size / 1e9;
    const machineTotal = machineAfterCold.total - machineBeforeCold.total;
    const result = {
      blobBytes: size,
      direct: {
        throughputMBps: size / directSeconds / MB,
        seconds: directSeconds,
        ttfbP50Ms: median(directTtfb),
        registryCpuSecondsPerGB: (registryAfterDirect.cpuSeconds - registryBeforeDirect.cpuSeconds) / (gigabytes * runs),
        clientCpuSecondsPerGB: (clientDirect.user + clientDirect.system) / 1e6 / (gigabytes * runs),
      },
      coldPullThrough: {
        seconds: cold.seconds,
        throughputMBps: size / cold.seconds / MB,
        ratioToDirect: cold.seconds / directSeconds,
        ttfbMs: cold.ttfbMs,
        /** CPU-seconds per GB of the other two processes of the transfer, and the whole machine's busy share. */
        registryCpuSecondsPerGB: (registryAfterCold.cpuSeconds - registryBeforeCold.cpuSeconds) / gigabytes,
        clientCpuSecondsPerGB: (clientCold.user + clientCold.system) / 1e6 / gigabytes,
        machineBusyShare: machineTotal > 0 ? (machineAfterCold.busy - machineBeforeCold.busy) / machineTotal : Number.NaN,
        loadAverage1m: loadBeforeCold,
      },
      cacheHit: { throughputMBps: size / hitSeconds / MB, seconds: hitSeconds, ttfbP50Ms: median(hitTtfb) },
      agent: {
        peakRssMB: end.peakRssBytes / MB,
        peakRssColdMB: afterCold.peakRssBytes / MB,
        rssAfterStartMB: before.rssBytes / MB,
        cpuSecondsPerGBCold: (afterCold.cpuSeconds - before.cpuSeconds) / (size / 1e9),
        cpuSecondsPerGBHit: (afterHits.cpuSeconds - afterCold.cpuSeconds) / ((size * runs) / 1e9),
        /** Cold pull-through CPU-seconds per GB by thread name (main thread, libuv pool, hash worker, GC helpers). */
        cpuSecondsPerGBColdByThread: threadCpuDelta(threadsAfterCold, threadsBefore, gigabytes),
      },
    };
    console.log(`blob: ${(size / 2 ** 20).toFixed(0)} MiB, ${runs} runs each (median), TTFB over ${ttfbSamples} requests (p50)`);
    console.log(
      `direct from docker-registry   ${result.direct.throughputMBps.toFixed(0).padStart(6)} MB/s   TTFB p50 ${result.direct.ttfbP50Ms.toFixed(2)} ms`,
    );
    console.log(
      `cold pull-through (agent)     ${result.coldPullThrough.throughputMBps.toFixed(0).padStart(6)} MB/s   ${result.coldPullThrough.seconds.toFixed(2)} s = ${result.coldPullThrough.ratioToDirect.toFixed(2)}× direct`,
    );
    console.log(
      `cache hit (agent)             ${result.cacheHit.throughputMBps.toFixed(0).padStart(6)} MB/s   TTFB p50 ${result.cacheHit.ttfbP50Ms.toFixed(2)} ms`,
    );
    console.log(
      `agent peak RSS ${result.agent.peakRssMB.toFixed(0)} MB (after the cold pull ${result.agent.peakRssColdMB.toFixed(0)} MB, after start ${result.agent.rssAfterStartMB.toFixed(0)} MB); CPU ${result.agent.cpuSecondsPerGBCold.toFixed(2)} s/GB cold, ${result.agent.cpuSecondsPerGBHit.toFixed(2)} s/GB hit`,
    );
    console.log(
      `agent CPU s/GB cold by thread: ${Object.entries(result.agent.cpuSecondsPerGBColdByThread)
        .map(([name, perGB]) => `${name} ${perGB.toFixed(2)}`)
        .join(", ")}`,
    );
    const c = result.coldPullThrough;
    console.log(
      `other CPU s/GB: registry ${result.direct.registryCpuSecondsPerGB.toFixed(2)} direct, ${c.registryCpuSecondsPerGB.toFixed(2)} cold; client ${result.direct.clientCpuSecondsPerGB.toFixed(2)} direct, ${c.clientCpuSecondsPerGB.toFixed(2)} cold; machine ${(c.machineBusyShare * 100).toFixed(0)} % busy during the cold pull (load average ${c.loadAverage1m.toFixed(2)} before it)`,
    );
    if (json !== undefined) {
      const { writeFile } = await import("node:fs/promises");
      await writeFile(json, `${JSON.stringify(result, null, 2)}\n`);
    }
  } finally {
    await agent?.stop().catch(() => undefined);
    await origin?.stop().catch(() => undefined);
    await client.close();
    await removeTempDir(work);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
