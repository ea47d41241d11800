// npm run sim — the swarm simulator (pkg/sim) over a sweep of N: per N, the last, p99 and median node's
// time against the P2P bound, origin copies, wasted bytes, tracker messages, and how long the simulation
// took. Prints a table, writes JSON and an SVG chart of ratio-to-bound vs N; asserts nothing.
import { mkdir, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_SWARM_TUNING, type SwarmTuning } from "../../pkg/peer/index.js";
import { type SimResult, simulate, uniformSwarm } from "../../pkg/sim/index.js";
import { renderScaleChart } from "./sim-chart.js";

const MIB = 1024 * 1024;
const MBIT = 1e6 / 8;
const EXIT_USAGE = 2;
/** Simulated time allowed per run: this many times the P2P bound, plus a margin. */
const LIMIT_BOUND_FACTOR = 30;
const LIMIT_MARGIN_MS = 60_000;

export const USAGE = `npm run sim -- [flags]
  --nodes LIST         node counts to simulate (default 2,8,32,100,316,1000)
  --image-mib MIB      the blob every node pulls at once (default 256)
  --node-mbit MBIT     each node's upload and download (default 1000)
  --origin-mbit MBIT   the origin's upload (default 1000)
  --zones N            zones the nodes are spread over (default 1: zones not in play)
  --latency-ms MS      one-way latency inside a zone (default 0.25; across zones 4×)
  --max-holders N      holders per tracker answer (default: the tracker's)
  --tick-ms MS         simulation step (default 5)
  --tuning K=V,...     scheduler knobs (SwarmTuning), e.g. relayWaitMs=500,hedgeAfterMs=1000
  --notices on|off     BlobChanged notices from the tracker (default on; off: the agents poll as before)
  --notice-deltas on|off  notices carry the change and the agents apply it (default on; off: every notice
                       says "look it up", as before deltas)
  --notice-interval-ms MS  the tracker's coalescing interval per blob (default: the tracker's)
  --notice-rate N      the tracker's cap on one blob's notices per second, all watchers (default: the tracker's; 0: none)
  --seed N             (default 1)
  --json FILE          write the results as JSON
  --svg FILE           write the chart (ratio to the P2P bound vs N)`;

export interface SimBenchOptions {
  readonly nodes: readonly number[];
  readonly imageMib: number;
  readonly nodeMbit: number;
  readonly originMbit: number;
  readonly zones: number;
  readonly latencyMs: number;
  readonly maxHolders: number | undefined;
  readonly tickMs: number;
  readonly tuning: Partial<SwarmTuning>;
  readonly notices: boolean;
  readonly noticeDeltas: boolean;
  readonly noticeIntervalMs: number | undefined;
  readonly noticeRate: number | undefined;
  readonly seed: number;
  readonly json: string | undefined;
  readonly svg: string | undefined;
}

export class SimUsageError extends Error {
  override readonly name = "SimUsageError";
}

function number(flag: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min || value > max)
    throw new SimUsageError(`--${flag}: expected a number in ${min}..${max}, got ${JSON.stringify(raw)}`);
  return value;
}

function onOff(flag: string, raw: string | undefined, fallback: boolean): boolean {
  if (raw === undefined) return fallback;
  if (raw === "on" || raw === "off") return raw === "on";
  throw new SimUsageError(`--${flag}: expected on or off, got ${JSON.stringify(raw)}`);
}

function isKnob(key: string): key is keyof SwarmTuning {
  return key in DEFAULT_SWARM_TUNING;
}

export function parseSimArgs(argv: readonly string[]): SimBenchOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: Object.fromEntries(
        [
          "nodes",
          "image-mib",
          "node-mbit",
          "origin-mbit",
          "zones",
          "latency-ms",
          "max-holders",
          "tick-ms",
          "tuning",
          "notices",
          "notice-deltas",
          "notice-interval-ms",
          "notice-rate",
          "seed",
          "json",
          "svg",
        ].map((name) => [name, { type: "string" }]),
      ),
      strict: true,
    }) as { values: Record<string, string | undefined> });
  } catch (error) {
    throw new SimUsageError(error instanceof Error ? error.message : String(error));
  }
  const nodes = (values.nodes ?? "2,8,32,100,316,1000").split(",").map((entry) => number("nodes", entry.trim(), 0, 1, 100_000));
  const tuning: Partial<Record<keyof SwarmTuning, number>> = {};
  for (const pair of (values.tuning ?? "").split(",").filter((p) => p.trim() !== "")) {
    const [key = "", raw] = pair.split("=");
    if (!isKnob(key))
      throw new SimUsageError(`--tuning: unknown knob ${JSON.stringify(key)} (one of ${Object.keys(DEFAULT_SWARM_TUNING).join(", ")})`);
    tuning[key] = number(`tuning ${key}`, raw, 0, 0, 600_000);
  }
  return {
    nodes,
    imageMib: number("image-mib", values["image-mib"], 256, 1, 65_536),
    nodeMbit: number("node-mbit", values["node-mbit"], 1000, 1, 1_000_000),
    originMbit: number("origin-mbit", values["origin-mbit"], 1000, 1, 1_000_000),
    zones: number("zones", values.zones, 1, 1, 64),
    latencyMs: number("latency-ms", values["latency-ms"], 0.25, 0, 1000),
    maxHolders: values["max-holders"] === undefined ? undefined : number("max-holders", values["max-holders"], 50, 1, 100_000),
    tickMs: number("tick-ms", values["tick-ms"], 5, 0.1, 1000),
    tuning,
    notices: onOff("notices", values.notices, true),
    noticeDeltas: onOff("notice-deltas", values["notice-deltas"], true),
    noticeIntervalMs:
      values["notice-interval-ms"] === undefined ? undefined : number("notice-interval-ms", values["notice-interval-ms"], 100, 1, 60_000),
    noticeRate: values["notice-rate"] === undefined ? undefined : number("notice-rate", values["notice-rate"], 500, 0, 10_000_000),
    seed: number("seed", values.seed, 1, 0, 2 ** 32 - 1),
    json: values.json,
    svg: values.svg ?? (values.json === undefined ? undefined : values.json.replace(/\.json$/, "") + ".svg"),
  };
}

function runOne(options: SimBenchOptions, nodes: number): SimResult {
  const base = uniformSwarm({
    nodes,
    blobBytes: options.imageMib * MIB,
    nodeBytesPerSecond: options.nodeMbit * MBIT,
    originBytesPerSecond: options.originMbit * MBIT,
    zones: options.zones,
  });
  const p2p =
    Math.max(
      base.blobBytes / base.originBytesPerSecond,
      (nodes * base.blobBytes) / (base.originBytesPerSecond + nodes * options.nodeMbit * MBIT),
    ) * 1000;
  return simulate({
    ...base,
    latencyMs: options.latencyMs,
    crossZoneLatencyMs: options.latencyMs * 4,
    tickMs: options.tickMs,
    seed: options.seed,
    tuning: { ...DEFAULT_SWARM_TUNING, ...options.tuning },
    notices: options.notices,
    noticeDeltas: options.noticeDeltas,
    ...(options.noticeIntervalMs === undefined ? {} : { noticeIntervalMs: options.noticeIntervalMs }),
    ...(options.noticeRate === undefined ? {} : { noticesPerBlobPerSecond: options.noticeRate === 0 ? Infinity : options.noticeRate }),
    timeLimitMs: LIMIT_BOUND_FACTOR * p2p + LIMIT_MARGIN_MS,
    ...(options.maxHolders === undefined ? {} : { maxLookupHolders: options.maxHolders }),
  });
}

const fmt = (value: number | undefined, digits = 2): string => (value === undefined ? "—" : value.toFixed(digits));

async function main(): Promise<number> {
  let options: SimBenchOptions;
  try {
    options = parseSimArgs(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof SimUsageError)) throw error;
    process.stderr.write(`sim: ${error.message}\n${USAGE}\n`);
    return EXIT_USAGE;
  }
  const results: SimResult[] = [];
  console.log(
    `${options.imageMib} MiB to every node; nodes ${options.nodeMbit} Mbit/s up and down, origin ${options.originMbit} Mbit/s, ${options.zones} zone(s), tick ${options.tickMs} ms, seed ${options.seed}, notices ${options.notices ? "on" : "off"}, deltas ${options.noticeDeltas ? "on" : "off"}`,
  );
  console.log(
    "nodes  bound s  last s  p99 s  p50 s  last/bound  p99/bound  origin×F  wasted%  lookups/node/s  announces/node/s  notices/node/s  applied%  stalls  wall s",
  );
  for (const nodes of options.nodes) {
    const r = runOne(options, nodes);
    results.push(r);
    const perNodeSecond = (count: number): string => fmt(count / nodes / Math.max(r.simulatedSeconds, 1e-9), 1);
    console.log(
      [
        nodes,
        fmt(r.boundSeconds),
        fmt(r.lastSeconds),
        fmt(r.p99Seconds),
        fmt(r.p50Seconds),
        fmt(r.ratioToBound),
        fmt(r.p99Seconds === undefined ? undefined : r.p99Seconds / r.boundSeconds),
        fmt(r.originCopies, 3),
        fmt(r.wastedFraction * 100, 1),
        perNodeSecond(r.lookups),
        perNodeSecond(r.announces),
        perNodeSecond(r.notices),
        fmt((r.deltaNotices / Math.max(1, r.notices)) * 100, 0),
        r.stalls,
        fmt(r.wallSeconds, 1),
      ].join("  "),
    );
  }
  if (options.json !== undefined) {
    await mkdir(dirname(options.json), { recursive: true });
    await writeFile(options.json, JSON.stringify({ options, results: results.map(({ completionSeconds: _, ...rest }) => rest) }, null, 2));
    console.log(`wrote ${options.json}`);
  }
  if (options.svg !== undefined) {
    const points = results
      .filter((r) => r.lastSeconds !== undefined && r.p99Seconds !== undefined && r.p50Seconds !== undefined)
      .map((r) => ({
        nodes: r.nodes,
        last: (r.lastSeconds ?? 0) / r.boundSeconds,
        p99: (r.p99Seconds ?? 0) / r.boundSeconds,
        p50: (r.p50Seconds ?? 0) / r.boundSeconds,
      }));
    await mkdir(dirname(options.svg), { recursive: true });
    await writeFile(
      options.svg,
      renderScaleChart(
        points,
        `Simulated: ${options.imageMib} MiB to N nodes, ${options.nodeMbit} Mbit/s links, origin ${options.originMbit} Mbit/s`,
      ),
    );
    console.log(`wrote ${options.svg}`);
  }
  return 0;
}

if (import.meta.url === `file://${process.argv[1] ?? ""}`) process.exitCode = await main();
