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
import { parseArgs } from "node:util";
import { parseBytes, parseDuration } from "../../pkg/config/index.js";
import { type Replica, TestCluster } from "../../pkg/controller/testing/test-cluster.js";
import type { ClusterAgent } from "../../pkg/controller/testing/cluster-agent.js";
import { procStats } from "../../pkg/metrics/index.js";
import { type Digest, digestOf } from "../../pkg/oci/index.js";
import { GrpcTrackerClient } from "../../pkg/tracker/index.js";

const { values } = parseArgs({
  options: {
    agents: { type: "string", default: "8" },
    waves: { type: "string", default: "6" },
    layers: { type: "string", default: "3" },
    "layer-size": { type: "string", default: "16MiB" },
    "upgrade-at": { type: "string", default: "1" },
    runs: { type: "string", default: "2" },
    sample: { type: "string", default: "5ms" },
    modes: { type: "string", default: "baseline,upgrade" },
    "pull-timeout": { type: "string", default: "5m" },
  },
});

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
  const agentCount = Number(values.agents);
  const waves = Number(values.waves);
  const layers = Number(values.layers);
  const layerSize = parseBytes(values["layer-size"]);
  const upgradeAt = Number(values["upgrade-at"]);
  const sampleMs = parseDuration(values.sample);
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
                const pulled = await agent.pull(
                  cluster.origin.host,
                  "bench/upgrade",
                  digest,
                  AbortSignal.timeout(parseDuration(values["pull-timeout"])),
                );
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
  const runs = Number(values.runs);
  console.error(
    `${values.agents} agents, ${values.waves} waves of ${values.layers} × ${values["layer-size"]} cold layers, upgrade from wave ${values["upgrade-at"]}, ${runs} run(s) per mode…`,
  );
  const results: RunResult[] = [];
  for (let i = 0; i < runs; i++) {
    for (const mode of values.modes.split(",").filter((m): m is "baseline" | "upgrade" => m === "baseline" || m === "upgrade")) {
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
  const waves = Number(values.waves);
  const baselineSlowest = Array.from(
    { length: waves },
    (_, w) => baselines.reduce((sum, r) => sum + (r.slowestPullMs[w] ?? 0), 0) / baselines.length,
  );
  const ratioText = (ratios: number[]): string => `${ratios.map((x) => x.toFixed(2)).join(" ")} (max ${Math.max(...ratios).toFixed(2)})`;
  for (const [i, r] of results.entries()) {
    if (r.mode !== "upgrade") continue;
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
