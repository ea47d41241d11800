// npm run bench:tracker -- --failover kill|term: the leader dies under K agents. Two real `shoal controller`
// replicas with --membership kubernetes elect a leader through the API double's Lease; K simulated agents
// (tracker-load/) connect to the leader and announce their inventories, then keep looking blobs up (blobs
// other agents hold, asking for the origin grant as an agent does). The leader is killed (SIGKILL, or
// SIGTERM: it releases the Lease); the agents reconnect to whichever replica serves, register at once and
// re-announce paced as the agent's client does. Reports how long until every agent was registered again
// and until every inventory was visible, lookup latency during the storm, how many lookups were answered
// with an origin grant for a blob an agent held (the agent would have gone to the origin), and the new
// leader's CPU and peak RSS. Prints figures; asserts nothing (the e2e test runs it small and asserts).
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { procStats } from "../../pkg/metrics/index.js";
import type { KubeApiDouble } from "../../pkg/k8s/testing/index.js";
import { makeTempDir, removeTempDir } from "../support/process.js";
import { ShoalController } from "../support/shoal-controller.js";
import { Worker, leaseHolder, quantile, startKubernetes, waitLeader, waitReady } from "./tracker-load/bench-harness.js";
import type { StormPlan, StormReport } from "./tracker-load/protocol.js";

/** How much of each replica's log --log-dir keeps. */
const LOG_KEEP_BYTES = 4 * 1024 * 1024;
/** How often the stand-in for the tracker Service looks at the replicas' readiness. */
const ROUTE_POLL_MS = 200;
/** Failed probes in a row before a replica leaves the Service (the kubelet's failureThreshold). */
const ROUTE_FAILURE_THRESHOLD = 3;

async function isReady(metricsUrl: string): Promise<boolean> {
  return fetch(`${metricsUrl}/readyz`, { signal: AbortSignal.timeout(1_000) }).then(
    (r) => r.status === 200,
    () => false,
  );
}

export interface FailoverBenchOptions {
  readonly agents: number;
  readonly workers: number;
  readonly seed: number;
  readonly signal: "SIGKILL" | "SIGTERM";
  /** Per agent: one lookup this often during the whole run. */
  readonly lookupIntervalMs: number;
  readonly baselineMs: number;
  readonly maxMs: number;
  readonly tailMs: number;
  /** The controllers' Lease timings (whole seconds for the duration). */
  readonly leaseDurationS: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
  readonly pacing: StormPlan["pacing"];
  readonly backoff: StormPlan["backoff"];
  /** Where to keep the tail of each replica's log (for looking into a run); dropped when absent. */
  readonly logDir?: string | undefined;
}

export interface FailoverBenchResult {
  readonly agents: number;
  readonly signal: string;
  readonly inventorySeconds: number;
  /** From the kill: the first agent registered with the new leader (it serves), the last one did. */
  readonly firstRegisteredSeconds: number;
  readonly allRegisteredSeconds: number;
  /** Agents that registered again / whose whole inventory became visible before the run ended. */
  readonly reRegistered: number;
  readonly reAnnounced: number;
  readonly allReannouncedSeconds: number;
  readonly attempts: number;
  /** Lookups answered before the kill and during the storm (kill → last inventory visible). */
  readonly baseline: LookupFigures;
  readonly storm: LookupFigures;
  /** Lookups that got no answer at all (no leader yet, the follower refusing). */
  readonly unavailable: number;
  readonly newLeaderCpuSeconds: number;
  readonly newLeaderPeakRssBytes: number;
  readonly oldLeaderPeakRssBytes: number;
  readonly generatorCpuSeconds: number;
}

export interface LookupFigures {
  readonly answered: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly late: number;
  readonly withHolders: number;
  /** Granted the origin for a blob another agent held: that agent would have fetched it from the origin. */
  readonly originGrants: number;
  readonly retry: number;
  readonly none: number;
}

function figures(reports: readonly StormReport[], fromMs: number, toMs: number): LookupFigures {
  const latencies: number[] = [];
  const counts = [0, 0, 0, 0];
  for (const r of reports) {
    for (let i = 0; i < r.lookupLatencies.length; i++) {
      const at = r.lookupSentAtMs[i] ?? Number.NaN;
      if (!(at >= fromMs && at < toMs)) continue;
      latencies.push(r.lookupLatencies[i] ?? Number.NaN);
      const result = r.lookupResults[i] ?? 3;
      counts[result] = (counts[result] ?? 0) + 1;
    }
  }
  latencies.sort((a, b) => a - b);
  return {
    answered: latencies.length,
    p50Ms: quantile(latencies, 0.5),
    p99Ms: quantile(latencies, 0.99),
    maxMs: latencies[latencies.length - 1] ?? Number.NaN,
    late: latencies.filter((ms) => ms > 2_000).length,
    withHolders: counts[0] ?? 0,
    originGrants: counts[1] ?? 0,
    retry: counts[2] ?? 0,
    none: counts[3] ?? 0,
  };
}

/** One run: two replicas, K agents, the leader killed. */
export async function runFailoverBench(
  options: FailoverBenchOptions,
  log: (line: string) => void = () => undefined,
): Promise<FailoverBenchResult> {
  const workDir = await makeTempDir("tracker-failover");
  let api: KubeApiDouble | undefined;
  const controllers: ShoalController[] = [];
  const workers: Worker[] = [];
  try {
    const started = await startKubernetes(options.agents, workDir, "replica-0");
    api = started.api;
    const lease = [
      "--lease-duration",
      `${options.leaseDurationS}s`,
      "--renew-deadline",
      `${options.renewDeadlineMs}ms`,
      "--retry-period",
      `${options.retryPeriodMs}ms`,
    ];
    const replicaArgs = (identity: string): string[] => [
      ...started.extraArgs.map((arg) => (arg === "replica-0" ? identity : arg)),
      ...lease,
    ];
    const leader = await ShoalController.start({ parentDir: workDir, extraArgs: replicaArgs("replica-0") });
    controllers.push(leader);
    await waitReady(leader.metricsUrl);
    await waitLeader(api, "replica-0");
    const follower = await ShoalController.start({ parentDir: workDir, extraArgs: replicaArgs("replica-1") });
    controllers.push(follower);
    const t0 = performance.now();
    for (let w = 0; w < options.workers; w++) workers.push(new Worker());
    const slices = workers.map((_, w) => Array.from({ length: options.agents }, (_, i) => i).filter((i) => i % options.workers === w));
    await Promise.all(
      workers.map((worker, w) =>
        worker.request({ type: "connect", agents: slices[w] ?? [], port: leader.port, seed: options.seed, ca: started.ca }, 900_000),
      ),
    );
    const inventorySeconds = (performance.now() - t0) / 1000;
    log(`  K=${options.agents}: ${options.agents} sessions and inventories on the leader in ${inventorySeconds.toFixed(1)} s`);
    const plan: StormPlan = {
      port: leader.port,
      agents: options.agents,
      seed: options.seed,
      lookupIntervalMs: options.lookupIntervalMs,
      baselineMs: options.baselineMs,
      maxMs: options.maxMs,
      tailMs: options.tailMs,
      pacing: options.pacing,
      backoff: options.backoff,
    };
    const storm = Promise.all(
      workers.map((worker) => worker.request({ type: "storm", plan }, options.baselineMs + options.maxMs + 120_000)),
    ) as Promise<StormReport[]>;
    await new Promise((resolve) => setTimeout(resolve, options.baselineMs));
    const oldLeader = await procStats(leader.daemon.pid);
    const followerBefore = await procStats(follower.daemon.pid);
    const killedAtMs = Date.now();
    process.kill(leader.daemon.pid, options.signal);
    for (const worker of workers) worker.notify({ type: "killed", atMs: killedAtMs });
    log(`  K=${options.agents}: ${options.signal} to the leader (pid ${leader.daemon.pid})`);
    // The tracker Service: it routes to the replica that is Ready (the leader), polled as an endpoints
    // controller would, and the workers are told where it routes now.
    let routed: number | undefined = leader.port;
    const routing = new AbortController();
    const router = (async () => {
      let failures = 0;
      while (!routing.signal.aborted) {
        const probe = await isReady(follower.metricsUrl);
        failures = probe ? 0 : failures + 1;
        // The dead leader leaves the Service after the threshold too (its endpoint lags, as in a cluster).
        const ready: number | undefined = probe ? follower.port : failures >= ROUTE_FAILURE_THRESHOLD ? undefined : routed;
        if (ready !== routed) {
          routed = ready;
          for (const worker of workers) worker.notify({ type: "route", port: ready });
          log(
            `  K=${options.agents}: the Service routes to ${ready === undefined ? "nothing" : ready === follower.port ? "replica-1" : "replica-0"} ${((Date.now() - killedAtMs) / 1000).toFixed(1)} s after the kill`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, ROUTE_POLL_MS));
      }
    })();
    const reports = await storm.finally(() => {
      routing.abort();
    });
    await router;
    const followerAfter = await procStats(follower.daemon.pid);
    const newLeader = leaseHolder(api);
    if (newLeader !== "replica-1") log(`  warning: the Lease names ${String(newLeader)} after the storm`);
    const registered = reports.flatMap((r) => r.registeredAtMs).filter((at) => at >= killedAtMs);
    const visible = reports.flatMap((r) => r.visibleAtMs).filter((at) => at >= killedAtMs);
    const lastVisible = visible.length === 0 ? killedAtMs : Math.max(...visible);
    const seconds = (at: number): number => (at - killedAtMs) / 1000;
    await Promise.all(workers.map((worker) => worker.request({ type: "close" }, 60_000).catch(() => undefined)));
    return {
      agents: options.agents,
      signal: options.signal,
      inventorySeconds,
      firstRegisteredSeconds: registered.length === 0 ? Number.NaN : seconds(Math.min(...registered)),
      allRegisteredSeconds: registered.length === 0 ? Number.NaN : seconds(Math.max(...registered)),
      reRegistered: registered.length,
      reAnnounced: visible.length,
      allReannouncedSeconds: seconds(lastVisible),
      attempts: reports.reduce((sum, r) => sum + r.attempts, 0),
      baseline: figures(reports, 0, killedAtMs),
      storm: figures(reports, killedAtMs, lastVisible),
      unavailable: reports.reduce((sum, r) => sum + r.lookupsUnavailable, 0),
      newLeaderCpuSeconds: followerAfter.cpuSeconds - followerBefore.cpuSeconds,
      newLeaderPeakRssBytes: followerAfter.peakRssBytes,
      oldLeaderPeakRssBytes: oldLeader.peakRssBytes,
      generatorCpuSeconds: reports.reduce((sum, r) => sum + r.cpuSeconds, 0),
    };
  } catch (error) {
    for (const controller of controllers) log(`--- ${controller.daemon.pid} log tail:\n${await controller.daemon.logTail(4_000)}`);
    throw error;
  } finally {
    if (options.logDir !== undefined) {
      await mkdir(options.logDir, { recursive: true });
      for (const [i, controller] of controllers.entries())
        await writeFile(join(options.logDir, `replica-${i}.log`), await controller.daemon.logTail(LOG_KEEP_BYTES));
    }
    for (const worker of workers) worker.stop();
    for (const controller of controllers) await controller.kill().catch(() => undefined);
    await api?.close();
    await removeTempDir(workDir);
  }
}
