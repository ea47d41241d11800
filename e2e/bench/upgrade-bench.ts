// npm run bench:upgrade — a rolling upgrade of the controller while agents pull. Against the API double
// with the chart's leader-election timings (lease 15 s, renew 10 s, retry 2 s, candidate period 1 s):
// two replicas, N agents in process behind a readiness-routed Service, waves of cold pulls (every agent
// pulls a new image of L layers at once, wave after wave). An "upgrade" run does what the Deployment's
// rolling update does (maxSurge 1, maxUnavailable 0) from the start of wave --upgrade-at: a new replica,
// Ready, the old leader stopped (SIGTERM: it hands over), a second new replica, Ready, the other old one
// stopped. A "baseline" run is the same without it. Runs alternate baseline/upgrade --runs times.
// Prints per run: the slowest pull of each wave, origin bytes / F, the longest time no replica served
// the tracker and the longest an agent had no session (both sampled every --sample), hand-over times,
// CPU-s/GB and peak RSS of the process. Asserts nothing.
import { benchOptions, bytesFlag, durationFlag, integerFlag, listFlag } from "./bench-flags.js";
import { type Replica, TestCluster } from "../../pkg/controller/testing/test-cluster.js";
import type { ClusterAgent } from "../../pkg/controller/testing/cluster-agent.js";
import { procStats } from "../../pkg/metrics/index.js";
import { type Digest, digestOf } from "../../pkg/oci/index.js";
import { GrpcTrackerClient } from "../../pkg/tracker/index.js";

const USAGE = `Usage: npm run bench:upgrade -- [flags]

A rolling upgrade of the controller's two replicas (one process, the API double) while N agents pull
waves of cold layers, against the same waves without the upgrade.

  --agents N           agents (1-200; default 8)
  --waves N            waves of pulls (1-100; default 6)
  --layers N           layers per wave (1-64; default 3)
  --layer-size SIZE    each layer (1KiB to 1GiB; default 16MiB)
  --upgrade-at N       the wave during which the replicas are replaced (0 to waves - 1; default 1)
  --runs N             runs per mode (1-20; default 2)
  --sample D           how often "no replica serving" is sampled (1ms to 1s; default 5ms)
  --modes LIST         baseline,upgrade or one of them (default both)
  --pull-timeout D     one agent's pull of a wave (1s to 1h; default 5m)
  --help`;

const MODES = ["baseline", "upgrade"] as const;
const options = benchOptions(
  USAGE,
  {
    agents: "8",
    waves: "6",
    layers: "3",
    "layer-size": "16MiB",
    "upgrade-at": "1",
    runs: "2",
    sample: "5ms",
    modes: "baseline,upgrade",
    "pull-timeout": "5m",
  },
  (flags) => {
    const waves = integerFlag("waves", flags.waves, 1, 100);
    return {
      agentCount: integerFlag("agents", flags.agents, 1, 200),
      waves,
      layers: integerFlag("layers", flags.layers, 1, 64),
      layerSize: bytesFlag("layer-size", flags["layer-size"], 1024, 1024 ** 3),
      upgradeAt: integerFlag("upgrade-at", flags["upgrade-at"], 0, waves - 1),
      runs: integerFlag("runs", flags.runs, 1, 20),
      sampleMs: durationFlag("sample", flags.sample, 1, 1_000),
      modes: listFlag("modes", flags.modes, MODES),
      pullTimeoutMs: durationFlag("pull-timeout", flags["pull-timeout"], 1_000, 3_600_000),
      layerSizeText: flags["layer-size"] ?? "",
    };
  },
);

/** The chart's defaults (values.yaml controller.leaderElection). */
const CHART_TIMINGS = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000, candidatePeriodMs: 1_000 } as const;

interface RunResult {
  readonly mode: "baseline" | "upgrade";
  /** Per wave, the slowest agent's pull time of the whole image (ms). */
  readonly slowestPullMs: number[];
  readonly originFactor: number;
  readonly failures: number;
  /** Longest sampled stretch with no replica serving (ms); 0 when one always served. */
  readonly noLeaderMs: number;
  /** Longest sampled stretch one agent had no tracker session (ms). */
  readonly agentNoSessionMs: number;
  /** Per stopped replica: from SIGTERM until its stop returned (hand-over included), ms. */
  readonly stopMs: number[];
  /** Waves during which the upgrade ran (first and last), undefined for a baseline run. */
  readonly upgradeWaves: readonly [number, number] | undefined;
  readonly cpuSecondsPerGb: number;
  readonly peakRssMb: number;
}

async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const start = performance.now();
  while (!check()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Longest stretch for which `bad()` held at every sample, over the sampler's life. */
function sampler(intervalMs: number, bad: () => boolean): { stop: () => number } {
  let longest = 0;
  let since: number | undefined;
  const timer = setInterval(() => {
    const now = performance.now();
    if (bad()) since ??= now;
    else if (since !== undefined) {
      longest = Math.max(longest, now - since);
      since = undefined;
    }
  }, intervalMs);
  return {
    stop: () => {
      clearInterval(timer);
      if (since !== undefined) longest = Math.max(longest, performance.now() - since);
      return longest;
    },
  };
}

async function run(mode: "baseline" | "upgrade", index: number): Promise<RunResult> {
  const { agentCount, waves, layers, layerSize, upgradeAt, sampleMs } = options;
  const cluster = await TestCluster.start();
  try {
    const startReplica = (identity: string): Promise<Replica> =>
      cluster.startReplica(identity, { ...CHART_TIMINGS, handoverTimeoutMs: 5_000 });
    const names = Array.from({ length: agentCount }, (_, i) => ({ pod: `agent-${i + 1}`, node: `node-${i + 1}`, ip: `127.0.3.${i + 1}` }));
    for (const n of names) cluster.addAgentPod(n.pod, n.node, n.ip);
    const a = await startReplica(`controller-${index}-old-a`);
    await waitFor(() => a.controller.leading && a.controller.ready() === true, 30_000, "the first leader");
    const b = await startReplica(`controller-${index}-old-b`);
    await waitFor(
      () =>
        b.controller.ready() === true && cluster.forwarder.readyTargets.length === 2 && cluster.issuerForwarder.readyTargets.length === 2,
      30_000,
      "both replicas Ready",
    );
    const agents: ClusterAgent[] = await Promise.all(names.map((n) => cluster.startAgent(n.pod, n.node, n.ip)));
    const sessions = agents.map((agent) => agent.tracker).filter((t): t is GrpcTrackerClient => t instanceof GrpcTrackerClient);
    await waitFor(
      () => sessions.every((s) => s.connected) && a.controller.tracker.snapshot().agents.length === agentCount,
      30_000,
      "every agent on the leader",
    );

    const noLeader = sampler(sampleMs, () => ![...cluster.replicas.values()].some((r) => r.controller.serving() === true));
    const noSession = sampler(sampleMs, () => sessions.some((s) => !s.connected));
    const before = await procStats(process.pid);
    const originBefore = cluster.origin.blobBytesServed;
    const stopMs: number[] = [];
    let upgrade: Promise<void> | undefined;
    let currentWave = 0;
    let upgradeWaves: [number, number] | undefined;
    const slowestPullMs: number[] = [];
    let failures = 0;
    let bytes = 0;
    let unique = 0;
    for (let wave = 0; wave < waves; wave++) {
      currentWave = wave;
      const blobs: Digest[] = [];
      for (let layer = 0; layer < layers; layer++) {
        const size = layerSize + 4096 * (wave * layers + layer);
        blobs.push((await cluster.origin.addBlob({ size, seed: `upgrade-bench-${index}-${wave}-${layer}` })).digest);
        unique += size;
      }
      if (mode === "upgrade" && wave === upgradeAt) {
        upgrade = (async () => {
          const oldFollower = a.controller.leading ? b : a;
          const oldLeader = oldFollower === a ? b : a;
          for (const [identity, old] of [
            [`controller-${index}-new-1`, oldLeader],
            [`controller-${index}-new-2`, oldFollower],
          ] as const) {
            const added = await startReplica(identity);
            await waitFor(
              () => added.controller.ready() === true && cluster.forwarder.readyTargets.includes(added.controller.trackerAddress),
              30_000,
              `${identity} Ready behind the Service`,
            );
            const stoppingAt = performance.now();
            await cluster.stopReplica(old.identity);
            stopMs.push(performance.now() - stoppingAt);
          }
          upgradeWaves = [wave, currentWave];
        })();
      }
      const times = await Promise.all(
        agents.map(async (agent) => {
          const startedAt = performance.now();
          await Promise.all(
            blobs.map(async (digest) => {
              try {
                const pulled = await agent.pull(cluster.origin.host, "bench/upgrade", digest, AbortSignal.timeout(options.pullTimeoutMs));
                if (digestOf(pulled.bytes) === digest) bytes += pulled.bytes.length;
                else failures++;
              } catch (error: unknown) {
                failures++;
                console.error(`wave ${wave}: ${error instanceof Error ? error.message : String(error)}`);
              }
            }),
          );
          return performance.now() - startedAt;
        }),
      );
      slowestPullMs.push(Math.max(...times));
      // The in-process stores are in memory: keep them bounded (each agent withdraws the blobs).
      await Promise.all(agents.flatMap((agent) => blobs.map((digest) => agent.forget(digest))));
    }
    await upgrade;
    const after = await procStats(process.pid);
    return {
      mode,
      slowestPullMs,
      originFactor: (cluster.origin.blobBytesServed - originBefore) / unique,
      failures,
      noLeaderMs: noLeader.stop(),
      agentNoSessionMs: noSession.stop(),
      stopMs,
      upgradeWaves,
      cpuSecondsPerGb: (after.cpuSeconds - before.cpuSeconds) / (bytes / 1e9),
      peakRssMb: after.peakRssBytes / 1e6,
    };
  } finally {
    await cluster.close();
  }
}

async function main(): Promise<void> {
  const { runs } = options;
  console.error(
    `${options.agentCount} agents, ${options.waves} waves of ${options.layers} × ${options.layerSizeText} cold layers, upgrade from wave ${options.upgradeAt}, ${runs} run(s) per mode…`,
  );
  const results: RunResult[] = [];
  for (let i = 0; i < runs; i++) {
    for (const mode of options.modes) {
      const result = await run(mode, results.length);
      results.push(result);
      const ms = (v: number): string => v.toFixed(0);
      console.log(
        `${mode} run ${i + 1}: slowest pull per wave ${result.slowestPullMs.map(ms).join(" ")} ms; origin ${result.originFactor.toFixed(3)}×F; failures ${result.failures}; ` +
          `no replica serving ${ms(result.noLeaderMs)} ms; longest agent without a session ${ms(result.agentNoSessionMs)} ms` +
          (result.stopMs.length > 0 ? `; old replicas stopped in ${result.stopMs.map(ms).join(", ")} ms` : "") +
          (result.upgradeWaves === undefined ? "" : `; the upgrade ran during waves ${result.upgradeWaves[0]}–${result.upgradeWaves[1]}`) +
          `; ${result.cpuSecondsPerGb.toFixed(2)} CPU-s/GB (whole process), peak RSS ${result.peakRssMb.toFixed(0)} MB`,
      );
    }
  }
  const baselines = results.filter((r) => r.mode === "baseline");
  const { waves } = options;
  const baselineSlowest = Array.from(
    { length: waves },
    (_, w) => baselines.reduce((sum, r) => sum + (r.slowestPullMs[w] ?? 0), 0) / baselines.length,
  );
  const ratioText = (ratios: number[]): string => `${ratios.map((x) => x.toFixed(2)).join(" ")} (max ${Math.max(...ratios).toFixed(2)})`;
  for (const [i, r] of results.entries()) {
    // Without a baseline run (--modes upgrade) there is nothing to compare with.
    if (r.mode !== "upgrade" || baselines.length === 0) continue;
    console.log(
      `upgrade run ${Math.ceil((i + 1) / 2)}: slowest pull / mean baseline slowest, per wave: ${ratioText(r.slowestPullMs.map((v, w) => v / (baselineSlowest[w] ?? v)))}`,
    );
    // The baseline run just before shares the machine's load of the moment: the fairer comparison on a busy machine.
    const previous = results[i - 1];
    if (previous?.mode === "baseline")
      console.log(
        `upgrade run ${Math.ceil((i + 1) / 2)}: slowest pull / the baseline run just before, per wave: ${ratioText(r.slowestPullMs.map((v, w) => v / (previous.slowestPullMs[w] ?? v)))}`,
      );
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
