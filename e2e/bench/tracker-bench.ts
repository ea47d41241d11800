// npm run bench:tracker — the controller under K agents. A real `shoal controller` process; K simulated
// agents over real gRPC, each on its own HTTP/2 connection from its own loopback address, held by a few
// load-generator processes (tracker-load/). Each agent registers and announces its inventory (~200
// blobs drawn from a catalogue with popular base layers, with piece hashes), then a cold rollout runs:
// every pulling agent downloads the new image's layers, looking holders up and announcing progress at
// the agent's own intervals, with heartbeats. Reports the controller's CPU and peak RSS from /proc,
// lookup latency, messages per second, and the generators' own CPU. Prints figures; asserts nothing.
import { writeFile, mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { KubeApiDouble } from "../../pkg/k8s/testing/index.js";
import { procStats } from "../../pkg/metrics/index.js";
import { makeTempDir, removeTempDir } from "../support/process.js";
import { ShoalController } from "../support/shoal-controller.js";
import { type FailoverBenchResult, type LookupFigures, runFailoverBench } from "./tracker-failover.js";
import { Worker, quantile, startKubernetes, waitLeader, waitReady } from "./tracker-load/bench-harness.js";
import type { BenchCa, RolloutPlan, RolloutReport } from "./tracker-load/protocol.js";
import { agentAddress } from "./tracker-load/workload.js";

const EXIT_USAGE = 2;
const MIB = 1024 * 1024;

export interface TrackerBenchOptions {
  readonly agents: readonly number[];
  /** Fail-over mode (tracker-failover.ts) instead of the rollout: how the leader is ended. */
  readonly failover: "SIGKILL" | "SIGTERM" | undefined;
  readonly storm: {
    readonly lookupIntervalMs: number;
    readonly baselineMs: number;
    readonly maxMs: number;
    readonly leaseDurationS: number;
    readonly logDir: string | undefined;
  };
  readonly workers: number;
  readonly membership: "static" | "kubernetes";
  readonly plan: RolloutPlan;
  readonly seed: number;
  readonly json: string | undefined;
}

export interface TrackerBenchResult {
  readonly agents: number;
  readonly membership: string;
  /** Registering every session and announcing every inventory, until the last one was visible. */
  readonly inventorySeconds: number;
  readonly inventoryCpuSeconds: number;
  readonly rolloutSeconds: number;
  readonly downloads: number;
  readonly controllerCpuCores: number;
  readonly controllerRssBytes: number;
  readonly controllerPeakRssBytes: number;
  readonly lookupsPerSecond: number;
  readonly offeredLookupsPerSecond: number;
  readonly announcesPerSecond: number;
  readonly heartbeatsPerSecond: number;
  readonly messagesPerSecond: number;
  readonly lookupP50Ms: number;
  readonly lookupP99Ms: number;
  readonly lookupMaxMs: number;
  readonly lookupErrors: number;
  readonly lateLookups: number;
  readonly deferredLookups: number;
  readonly skippedAnnounces: number;
  readonly meanResponseBytes: number;
  readonly meanHoldersPerAnswer: number;
  readonly generatorCpuCores: number;
}

export const USAGE = `npm run bench:tracker -- [flags]
  --agents LIST          K values (default 100,1000,5000)
  --workers N            load-generator processes (default 2)
  --membership MODE      static (default) or kubernetes (the API double with K agent Pods)
  --duration-s S         length of the rollout phase (default 20)
  --active-fraction F    share of agents pulling during it (default 1: all at once)
  --concurrent-layers N  layers each pulls at once (default 3, containerd's default)
  --lookup-ms MS         per download: one lookup this often (default 500, the agent's refresh interval)
  --announce-ms MS       per download: one progress announce this often (default 100, the agent's)
  --heartbeat-ms MS      per agent (default 5000, the agent's)
  --failover MODE        kill or term: two controller replicas (kubernetes membership), the leader is ended
                         with SIGKILL or SIGTERM; agents reconnect and re-announce paced (no rollout phase)
  --storm-lookup-ms MS   failover: per agent one lookup this often (default 10000: 200/s at 2,000 agents)
  --baseline-s S         failover: lookups before the kill (default 5)
  --storm-max-s S        failover: bound on the storm phase (default 120)
  --lease-s S            failover: the Lease duration (default 15, the chart's; renew deadline 2/3 of it, retry 2 s)
  --log-dir DIR          failover: keep the tail of each replica's log there
  --seed N               (default 1)
  --json FILE            write the results as JSON`;

class UsageError extends Error {}

export function parseTrackerBenchArgs(argv: readonly string[]): TrackerBenchOptions {
  let values: Record<string, string | undefined>;
  try {
    values = parseArgs({
      args: [...argv],
      options: Object.fromEntries(
        [
          "agents",
          "workers",
          "membership",
          "duration-s",
          "active-fraction",
          "concurrent-layers",
          "lookup-ms",
          "announce-ms",
          "heartbeat-ms",
          "seed",
          "json",
          "failover",
          "storm-lookup-ms",
          "baseline-s",
          "storm-max-s",
          "lease-s",
          "log-dir",
        ].map((n) => [n, { type: "string" }]),
      ),
      strict: true,
    }).values;
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  const num = (flag: string, fallback: number, min: number, max: number, raw = values[flag]): number => {
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!Number.isFinite(value) || value < min || value > max)
      throw new UsageError(`--${flag}: expected a number in ${min}..${max}, got ${JSON.stringify(raw)}`);
    return value;
  };
  const membership = values.membership ?? "static";
  if (membership !== "static" && membership !== "kubernetes")
    throw new UsageError(`--membership: expected static or kubernetes, got ${JSON.stringify(membership)}`);
  const failover = values.failover;
  if (failover !== undefined && failover !== "kill" && failover !== "term")
    throw new UsageError(`--failover: expected kill or term, got ${JSON.stringify(failover)}`);
  if (failover !== undefined && values.membership !== undefined && values.membership !== "kubernetes")
    throw new UsageError("--failover needs --membership kubernetes (leader election through the API double's Lease)");
  return {
    failover: failover === undefined ? undefined : failover === "kill" ? "SIGKILL" : "SIGTERM",
    storm: {
      lookupIntervalMs: num("storm-lookup-ms", 10_000, 10, 600_000),
      baselineMs: num("baseline-s", 5, 0, 600) * 1000,
      maxMs: num("storm-max-s", 120, 5, 3600) * 1000,
      leaseDurationS: Math.round(num("lease-s", 15, 2, 600)),
      logDir: values["log-dir"],
    },
    agents: (values.agents ?? "100,1000,5000").split(",").map((raw) => Math.round(num("agents", 0, 1, 60_000, raw.trim()))),
    workers: Math.round(num("workers", 2, 1, 16)),
    membership: failover === undefined ? membership : "kubernetes",
    plan: {
      durationMs: num("duration-s", 20, 1, 3600) * 1000,
      activeFraction: num("active-fraction", 1, 0, 1),
      concurrentLayers: Math.round(num("concurrent-layers", 3, 1, 4)),
      lookupIntervalMs: num("lookup-ms", 500, 1, 600_000),
      announceIntervalMs: num("announce-ms", 100, 1, 600_000),
      heartbeatIntervalMs: num("heartbeat-ms", 5000, 100, 600_000),
    },
    seed: Math.round(num("seed", 1, 0, 2 ** 31)),
    json: values.json,
  };
}

/** One K: controller, inventories, rollout. */
export async function runTrackerBench(
  agents: number,
  options: TrackerBenchOptions,
  log: (line: string) => void = () => undefined,
): Promise<TrackerBenchResult> {
  const workDir = await makeTempDir("tracker-bench");
  let api: KubeApiDouble | undefined;
  let controller: ShoalController | undefined;
  const workers: Worker[] = [];
  try {
    let extraArgs: string[];
    let ca: BenchCa | undefined;
    if (options.membership === "kubernetes") {
      ({ api, extraArgs, ca } = await startKubernetes(agents, workDir));
    } else {
      extraArgs = ["--membership", "static", "--allowed-peers", Array.from({ length: agents }, (_, i) => agentAddress(i)).join(",")];
    }
    controller = await ShoalController.start({ parentDir: workDir, extraArgs });
    await waitReady(controller.metricsUrl);
    if (api !== undefined) await waitLeader(api, "bench-controller");
    const pid = controller.daemon.pid;
    const before = await procStats(pid);
    const t0 = performance.now();
    for (let w = 0; w < options.workers; w++) workers.push(new Worker());
    const slices = workers.map((_, w) => Array.from({ length: agents }, (_, i) => i).filter((i) => i % options.workers === w));
    await Promise.all(
      workers.map((worker, w) =>
        worker.request(
          {
            type: "connect",
            agents: slices[w] ?? [],
            port: controller?.port ?? 0,
            seed: options.seed,
            ...(ca === undefined ? {} : { ca }),
          },
          900_000,
        ),
      ),
    );
    const inventorySeconds = (performance.now() - t0) / 1000;
    const afterInventory = await procStats(pid);
    log(
      `  K=${agents}: ${agents} sessions and inventories in ${inventorySeconds.toFixed(1)} s (controller ${(afterInventory.cpuSeconds - before.cpuSeconds).toFixed(1)} CPU-s, RSS ${(afterInventory.rssBytes / MIB).toFixed(0)} MiB)`,
    );
    const reports = (await Promise.all(
      workers.map((worker) => worker.request({ type: "rollout", plan: options.plan }, options.plan.durationMs + 120_000)),
    )) as RolloutReport[];
    const afterRollout = await procStats(pid);
    const elapsed = Math.max(...reports.map((r) => r.elapsedMs)) / 1000;
    const latencies = reports.flatMap((r) => r.latencies).sort((a, b) => a - b);
    const total = (pick: (r: RolloutReport) => number): number => reports.reduce((sum, r) => sum + pick(r), 0);
    const downloads = total((r) => r.downloads);
    const lookups = total((r) => r.lookups);
    const announces = total((r) => r.announces);
    const heartbeats = total((r) => r.heartbeats);
    await Promise.all(workers.map((worker) => worker.request({ type: "close" }, 60_000).catch(() => undefined)));
    return {
      agents,
      membership: options.membership,
      inventorySeconds,
      inventoryCpuSeconds: afterInventory.cpuSeconds - before.cpuSeconds,
      rolloutSeconds: elapsed,
      downloads,
      controllerCpuCores: (afterRollout.cpuSeconds - afterInventory.cpuSeconds) / elapsed,
      controllerRssBytes: afterRollout.rssBytes,
      controllerPeakRssBytes: afterRollout.peakRssBytes,
      lookupsPerSecond: lookups / elapsed,
      offeredLookupsPerSecond: (downloads * 1000) / options.plan.lookupIntervalMs,
      announcesPerSecond: announces / elapsed,
      heartbeatsPerSecond: heartbeats / elapsed,
      messagesPerSecond: (lookups + announces + heartbeats) / elapsed,
      lookupP50Ms: quantile(latencies, 0.5),
      lookupP99Ms: quantile(latencies, 0.99),
      lookupMaxMs: latencies[latencies.length - 1] ?? Number.NaN,
      lookupErrors: total((r) => r.lookupErrors),
      lateLookups: total((r) => r.lateLookups),
      deferredLookups: total((r) => r.deferredLookups),
      skippedAnnounces: total((r) => r.skippedAnnounces),
      meanResponseBytes: lookups === 0 ? 0 : total((r) => r.responseBytes) / lookups,
      meanHoldersPerAnswer: total((r) => r.checkedLookups) === 0 ? 0 : total((r) => r.holdersSeen) / total((r) => r.checkedLookups),
      generatorCpuCores: total((r) => r.cpuSeconds) / ((performance.now() - t0) / 1000),
    };
  } finally {
    for (const worker of workers) worker.stop();
    await controller?.stop();
    await api?.close();
    await removeTempDir(workDir);
  }
}

async function main(): Promise<number> {
  let options: TrackerBenchOptions;
  try {
    options = parseTrackerBenchArgs(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`bench:tracker: ${error.message}\n${USAGE}\n`);
    return EXIT_USAGE;
  }
  if (options.failover !== undefined) return await failoverMain(options);
  const { plan } = options;
  console.log(
    `membership ${options.membership}; rollout ${plan.durationMs / 1000} s, ${plan.activeFraction * 100}% of agents pulling ${plan.concurrentLayers} layers at once, per download a lookup every ${plan.lookupIntervalMs} ms and an announce every ${plan.announceIntervalMs} ms; heartbeat ${plan.heartbeatIntervalMs} ms; ${options.workers} generator processes`,
  );
  const results: TrackerBenchResult[] = [];
  for (const agents of options.agents) {
    const r = await runTrackerBench(agents, options, (line) => {
      console.log(line);
    });
    results.push(r);
    console.log(
      `  K=${r.agents}: controller ${r.controllerCpuCores.toFixed(2)} cores, RSS ${(r.controllerRssBytes / MIB).toFixed(0)} MiB (peak ${(r.controllerPeakRssBytes / MIB).toFixed(0)}); lookups ${r.lookupsPerSecond.toFixed(0)}/s of ${r.offeredLookupsPerSecond.toFixed(0)}/s offered, p50 ${r.lookupP50Ms.toFixed(1)} ms, p99 ${r.lookupP99Ms.toFixed(1)} ms, max ${r.lookupMaxMs.toFixed(0)} ms, ${r.lateLookups} over 2 s, ${r.lookupErrors} errors; announces ${r.announcesPerSecond.toFixed(0)}/s (${r.skippedAnnounces} skipped: stream backed up); messages ${r.messagesPerSecond.toFixed(0)}/s; answer ${(r.meanResponseBytes / 1024).toFixed(1)} KiB with ${r.meanHoldersPerAnswer.toFixed(0)} holders; generators ${r.generatorCpuCores.toFixed(2)} cores`,
    );
  }
  if (options.json !== undefined) {
    await mkdir(dirname(options.json), { recursive: true });
    await writeFile(options.json, JSON.stringify({ options, results }, null, 2));
    console.log(`wrote ${options.json}`);
  }
  return 0;
}

/** --failover: one run per K, figures printed (and written with --json). */
async function failoverMain(options: TrackerBenchOptions): Promise<number> {
  const signal = options.failover ?? "SIGKILL";
  const { storm } = options;
  const renewDeadlineMs = Math.round((storm.leaseDurationS * 1000 * 2) / 3);
  console.log(
    `fail-over (${signal}): two replicas, Lease ${storm.leaseDurationS} s (renew deadline ${renewDeadlineMs} ms, retry 2 s); per agent a lookup every ${storm.lookupIntervalMs} ms; ${options.workers} generator processes`,
  );
  const results: FailoverBenchResult[] = [];
  for (const agents of options.agents) {
    const r = await runFailoverBench(
      {
        agents,
        workers: options.workers,
        seed: options.seed,
        signal,
        lookupIntervalMs: storm.lookupIntervalMs,
        baselineMs: storm.baselineMs,
        maxMs: storm.maxMs,
        tailMs: 2_000,
        leaseDurationS: storm.leaseDurationS,
        renewDeadlineMs,
        retryPeriodMs: Math.min(2_000, renewDeadlineMs / 2),
        pacing: {},
        backoff: {},
        logDir: storm.logDir,
      },
      (line) => {
        console.log(line);
      },
    );
    results.push(r);
    const f = (l: LookupFigures): string =>
      `${l.answered} answered, p50 ${l.p50Ms.toFixed(1)} ms, p99 ${l.p99Ms.toFixed(1)} ms, max ${l.maxMs.toFixed(0)} ms, ${l.late} over 2 s; ${l.withHolders} with holders, ${l.retry} retry, ${l.none} none, ${l.originGrants} origin grants`;
    console.log(
      `  K=${r.agents}: re-registered ${r.reRegistered}/${r.agents}: first ${r.firstRegisteredSeconds.toFixed(1)} s, all ${r.allRegisteredSeconds.toFixed(1)} s after the ${r.signal} (${r.attempts} session attempts); ` +
        `every inventory visible ${r.allReannouncedSeconds.toFixed(1)} s after it (${r.reAnnounced}/${r.agents})`,
    );
    console.log(`  K=${r.agents}: lookups before: ${f(r.baseline)}`);
    console.log(`  K=${r.agents}: lookups during the storm: ${f(r.storm)}; ${r.unavailable} unanswered (no leader)`);
    console.log(
      `  K=${r.agents}: new leader ${r.newLeaderCpuSeconds.toFixed(1)} CPU-s from the kill to the end, peak RSS ${(r.newLeaderPeakRssBytes / MIB).toFixed(0)} MiB (old leader's ${(r.oldLeaderPeakRssBytes / MIB).toFixed(0)} MiB); generators ${r.generatorCpuSeconds.toFixed(1)} CPU-s`,
    );
  }
  if (options.json !== undefined) {
    await mkdir(dirname(options.json), { recursive: true });
    await writeFile(options.json, JSON.stringify({ options, results }, null, 2));
    console.log(`wrote ${options.json}`);
  }
  return 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.exitCode = await main();
