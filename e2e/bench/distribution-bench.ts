// npm run bench — one image to N nodes on network namespaces (tc tbf links, a real containerd per
// node), three ways in one run: (a) every node straight from the origin, (b) through a central
// pull-through cache (docker-registry in proxy mode on a node-sized link), (c) through Shoal (an agent
// per node, the controller as tracker). Per arm: last and median node, origin egress from the kernel
// counter of the origin's interface, the ratio to the P2P bound (docs/architecture.md), CPU-seconds and peak RSS per
// agent. Prints figures and writes JSON and SVG; asserts nothing.
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { generateImageLayout } from "../../pkg/imagegen/index.js";
import { type ClusterNode, NetnsCluster } from "../netns/cluster.js";
import { distributionBounds } from "../../pkg/bounds/index.js";
import { samples, scrapeInNetns } from "../netns/netns-metrics.js";
import { type NodePullResult, median, pullRound } from "../netns/pull-round.js";
import { makeTempDir, removeTempDir } from "../support/process.js";
import { renderChart } from "./distribution-chart.js";
import {
  type Arm,
  BenchUsageError,
  type DistributionBenchOptions,
  type Puller,
  USAGE,
  parseDistributionBenchArgs,
} from "./distribution-options.js";
import {
  type MachineFigures,
  type ProcessGroups,
  cpuBoundNote,
  cpuSnapshot,
  formatMachineFigures,
  machineFigures,
  procStats,
  runningPids,
} from "../../pkg/metrics/index.js";

const MIB = 1024 * 1024;
const MB = 1e6;
const GB = 1e9;
const BITS_PER_BYTE = 8;
/** Default per-arm timeout: this many times the client-server bound (the slowest arm's limit), plus a margin. */
const TIMEOUT_BOUND_FACTOR = 3;
const TIMEOUT_MARGIN_S = 120;
const EXIT_USAGE = 2;

interface AgentFigures {
  readonly node: string;
  /** User + system CPU while the nodes pulled (start-up excluded). */
  readonly cpuSeconds: number;
  /** Including start-up. */
  readonly cpuSecondsTotal: number;
  readonly cpuSecondsPerGB: number;
  readonly peakRssBytes: number;
  /** Piece bytes received from peers and not kept (shoal_peer_bytes_wasted_total during the pulls): duplicates of hedged, endgame or raced requests, and bad pieces. */
  readonly wastedPeerBytes: number;
  /** The same by the metric's reason (already_held, unverifiable, bad, incomplete). */
  readonly wastedPeerBytesByReason: Readonly<Record<string, number>>;
  /** Bytes this agent fetched from the origin during the pulls (shoal_origin_bytes_fetched_total). */
  readonly originBytes: number;
  /** Its origin fetches by the reason its log gives (granted, no tracker, no holder announced it in time, orphaned, silent). */
  readonly originFetchesByReason: Readonly<Record<string, number>>;
  /** Requests it answered 404 so that the runtime pulled from the origin itself, by reason (shoal_fallback_responses_total). */
  readonly fallbacksByReason: Readonly<Record<string, number>>;
  /** Swarm download rounds that ended before the blob was whole, by reason (shoal_swarm_stalls_total: silent, orphaned). */
  readonly stallsByReason: Readonly<Record<string, number>>;
}

interface ArmResult {
  readonly lastNodeSeconds: number;
  readonly medianNodeSeconds: number;
  /** Kernel tx_bytes of the origin's interface during the arm (payload plus ~0.2% headers at MTU 9000). */
  readonly originBytes: number;
  readonly originCopies: number;
  /** The P2P bound for this topology: what every arm is compared with. */
  readonly boundSeconds: number;
  readonly ratioToBound: number;
  readonly clientServerBoundSeconds: number;
  readonly complete: boolean;
  readonly nodes: readonly { readonly node: string; readonly seconds: number; readonly ok: boolean; readonly error?: string }[];
  /** Shoal arm only. */
  readonly agents?: readonly AgentFigures[];
  /** The machine's CPU while the nodes pulled, and what the harness's processes took of it. */
  readonly machine: MachineFigures;
}

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

async function runArm(
  arm: Arm,
  cluster: NetnsCluster,
  ref: string,
  digest: string,
  imageBytes: number,
  bounds: ReturnType<typeof distributionBounds>,
  timeoutMs: number,
  directHostsDir: string,
  puller: Puller,
): Promise<ArmResult> {
  const cri = puller === "cri";
  await cluster.startContainerds({ cri });
  try {
    if (arm === "direct" && cri) {
      for (const node of cluster.nodes) await cluster.useOriginDirect(node);
    }
    if (arm === "cache") {
      await cluster.startCache();
      for (const node of cluster.nodes) await cluster.useCacheMirror(node);
    }
    if (arm === "shoal") {
      await cluster.startController();
      await cluster.startAgents();
      for (const node of cluster.nodes) await cluster.useAgentMirror(node);
    }
    const countersBefore = arm === "shoal" ? await agentCounters(cluster.nodes) : new Map<string, AgentCounters>();
    const before = await cluster.originTxBytes();
    log(`${arm}: ${cluster.nodes.length} nodes pull ${ref} (${cri ? "CRI PullImage" : "ctr images pull"})`);
    const groups = processGroups(cluster);
    const cpuBefore = await cpuSnapshot(groups);
    const results = await pullRound(cluster.nodes, ref, {
      direct: arm === "direct",
      directHostsDir,
      cri,
      timeoutMs,
      onFinished: (r) => {
        log(
          `  ${r.node} ${r.error === undefined ? `done in ${r.seconds.toFixed(1)} s` : `FAILED after ${r.seconds.toFixed(1)} s: ${r.error}`}`,
        );
      },
    });
    const machine = machineFigures(cpuBefore, await cpuSnapshot(groups));
    const originBytes = (await cluster.originTxBytes()) - before;
    const agents = arm === "shoal" ? await agentFigures(cluster.nodes, imageBytes, countersBefore) : undefined;
    return summarize(results, digest, originBytes, imageBytes, bounds, agents, machine);
  } finally {
    await cluster.stopContainerds();
    await cluster.stopAgents();
    await cluster.stopController();
    await cluster.stopCache();
  }
}

/** The long-lived processes of an arm, by what they are (the pulling clients and the kernel are "other"). */
function processGroups(cluster: NetnsCluster): ProcessGroups {
  return {
    agents: runningPids(cluster.nodes.map((node) => node.agent?.daemon.pid)),
    controller: runningPids([cluster.controller?.pid]),
    containerd: runningPids(cluster.nodes.map((node) => node.containerd?.pid)),
    registries: runningPids([cluster.origin?.pid, cluster.cache?.pid]),
  };
}

/** Each agent's CPU seconds and wasted peer bytes so far, to subtract from the figures after the pulls. */
interface AgentCounters {
  readonly cpuSeconds: number;
  readonly wastedPeerBytes: Readonly<Record<string, number>>;
  readonly originBytes: number;
  readonly fallbacks: Readonly<Record<string, number>>;
  readonly stalls: Readonly<Record<string, number>>;
  /** Size of its log file: the pulls' lines follow. */
  readonly logOffset: number;
}

async function agentCounters(nodes: readonly ClusterNode[]): Promise<Map<string, AgentCounters>> {
  const counters = new Map<string, AgentCounters>();
  for (const node of nodes) {
    if (node.agent === undefined) continue;
    counters.set(node.endpoint.name, {
      cpuSeconds: (await procStats(node.agent.daemon.pid)).cpuSeconds,
      wastedPeerBytes: await wastedPeerBytes(node),
      originBytes: await originBytesFetched(node),
      fallbacks: await fallbackResponses(node),
      stalls: await byReason(node, "shoal_swarm_stalls_total"),
      logOffset: (await stat(node.agent.logFile)).size,
    });
  }
  return counters;
}

/** shoal_origin_bytes_fetched_total, scraped inside the node's namespace. */
async function originBytesFetched(node: ClusterNode): Promise<number> {
  if (node.agent === undefined) return 0;
  const text = await scrapeInNetns(node.endpoint.netns, node.agent.metricsUrl);
  return samples(text, "shoal_origin_bytes_fetched_total").reduce((total, s) => total + s.value, 0);
}

/**
 * The agent's origin fetches since `offset` of its log, by reason: the fetcher logs one line per blob it
 * takes from the origin ("fetching the blob from the origin", with why) and one per blob whose rest it
 * takes after peers could not supply it ("no peer can supply the rest", with how the download ended).
 */
async function originFetchReasons(logFile: string, offset: number): Promise<Record<string, number>> {
  const text = (await readFile(logFile)).subarray(offset).toString("utf8");
  const byReason: Record<string, number> = {};
  for (const line of text.split("\n")) {
    if (!line.includes("from the origin")) continue;
    let entry: { msg?: unknown; reason?: unknown };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      continue;
    }
    if (typeof entry.msg !== "string") continue;
    const reason = typeof entry.reason === "string" ? entry.reason : "unknown";
    const key = entry.msg.startsWith("no peer can supply the rest") ? `rest after ${reason}` : reason;
    byReason[key] = (byReason[key] ?? 0) + 1;
  }
  return byReason;
}

/** A counter of the agent's summed by its `reason` label, scraped inside the node's namespace. */
async function byReason(node: ClusterNode, metric: string): Promise<Record<string, number>> {
  const totals: Record<string, number> = {};
  if (node.agent === undefined) return totals;
  const text = await scrapeInNetns(node.endpoint.netns, node.agent.metricsUrl);
  for (const s of samples(text, metric)) {
    const reason = s.labels.reason ?? "";
    totals[reason] = (totals[reason] ?? 0) + s.value;
  }
  return totals;
}

/** Piece bytes received from peers and not kept, by reason. */
function wastedPeerBytes(node: ClusterNode): Promise<Record<string, number>> {
  return byReason(node, "shoal_peer_bytes_wasted_total");
}

/** Requests the agent answered 404 so that the runtime went to the origin itself, by reason. */
function fallbackResponses(node: ClusterNode): Promise<Record<string, number>> {
  return byReason(node, "shoal_fallback_responses_total");
}

/** `after` minus `before`, per reason, dropping reasons that did not grow. */
function grownSince(after: Readonly<Record<string, number>>, before: Readonly<Record<string, number>> | undefined): Record<string, number> {
  const delta: Record<string, number> = {};
  for (const [reason, bytes] of Object.entries(after)) {
    const grown = bytes - (before?.[reason] ?? 0);
    if (grown > 0) delta[reason] = grown;
  }
  return delta;
}

function wastedFigures(byReason: Record<string, number>): { wastedPeerBytes: number; wastedPeerBytesByReason: Record<string, number> } {
  return { wastedPeerBytes: Object.values(byReason).reduce((total, bytes) => total + bytes, 0), wastedPeerBytesByReason: byReason };
}

async function agentFigures(
  nodes: readonly ClusterNode[],
  imageBytes: number,
  before: ReadonlyMap<string, AgentCounters>,
): Promise<AgentFigures[]> {
  const figures: AgentFigures[] = [];
  for (const node of nodes) {
    if (node.agent === undefined) continue;
    const stats = await procStats(node.agent.daemon.pid);
    const earlier = before.get(node.endpoint.name);
    const cpuSeconds = round(stats.cpuSeconds - (earlier?.cpuSeconds ?? 0));
    figures.push({
      node: node.endpoint.name,
      cpuSeconds,
      cpuSecondsTotal: round(stats.cpuSeconds),
      cpuSecondsPerGB: round(cpuSeconds / (imageBytes / GB)),
      peakRssBytes: stats.peakRssBytes,
      ...wastedFigures(grownSince(await wastedPeerBytes(node), earlier?.wastedPeerBytes)),
      originBytes: (await originBytesFetched(node)) - (earlier?.originBytes ?? 0),
      originFetchesByReason: await originFetchReasons(node.agent.logFile, earlier?.logOffset ?? 0),
      fallbacksByReason: grownSince(await fallbackResponses(node), earlier?.fallbacks),
      stallsByReason: grownSince(await byReason(node, "shoal_swarm_stalls_total"), earlier?.stalls),
    });
  }
  return figures;
}

function summarize(
  results: readonly NodePullResult[],
  digest: string,
  originBytes: number,
  imageBytes: number,
  bounds: ReturnType<typeof distributionBounds>,
  agents: AgentFigures[] | undefined,
  machine: MachineFigures,
): ArmResult {
  const ok = (r: NodePullResult): boolean => r.error === undefined && r.digest === digest;
  const seconds = results.map((r) => r.seconds);
  const last = Math.max(...seconds);
  return {
    lastNodeSeconds: round(last),
    medianNodeSeconds: round(median(seconds)),
    originBytes,
    originCopies: round(originBytes / imageBytes, 3),
    boundSeconds: round(bounds.p2pSeconds),
    ratioToBound: round(last / bounds.p2pSeconds),
    clientServerBoundSeconds: round(bounds.clientServerSeconds),
    complete: results.every(ok),
    nodes: results.map((r) => ({
      node: r.node,
      seconds: round(r.seconds),
      ok: ok(r),
      ...(r.error === undefined
        ? r.digest === digest
          ? {}
          : { error: `digest ${r.digest ?? "none"} instead of ${digest}` }
        : { error: r.error }),
    })),
    ...(agents === undefined ? {} : { agents }),
    machine,
  };
}

function round(value: number, digits = 2): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

function report(
  options: DistributionBenchOptions,
  imageBytes: number,
  bounds: ReturnType<typeof distributionBounds>,
  arms: Partial<Record<Arm, ArmResult>>,
): string {
  const lines = [
    "",
    `${options.nodes} nodes, image ${(imageBytes / MB).toFixed(1)} MB (F) in ${options.layers} layers; node links ${options.nodeMbit} Mbit/s up and down, origin ${options.originMbit} Mbit/s; pulled with ${options.puller === "cri" ? "CRI PullImage (the kubelet's path)" : "ctr images pull"}`,
    `P2P bound max(F/u_s, F/d, N·F/(u_s + N·u)) = ${bounds.p2pSeconds.toFixed(1)} s; client-server bound max(N·F/u_s, F/d) = ${bounds.clientServerSeconds.toFixed(1)} s`,
    "",
    `${"arm".padEnd(8)}${"last node".padStart(11)}${"median".padStart(10)}${"× bound".padStart(10)}${"origin / F".padStart(12)}  complete`,
  ];
  for (const [arm, r] of Object.entries(arms)) {
    lines.push(
      `${arm.padEnd(8)}${`${r.lastNodeSeconds.toFixed(1)} s`.padStart(11)}${`${r.medianNodeSeconds.toFixed(1)} s`.padStart(10)}${r.ratioToBound.toFixed(2).padStart(10)}${r.originCopies.toFixed(3).padStart(12)}  ${r.complete ? "yes" : "NO"}`,
    );
  }
  lines.push(
    "",
    "the machine while the nodes pulled (agents, controller, containerd daemons, registries; other: the pulling clients, the kernel's network work, the rest of the host)",
  );
  for (const [arm, r] of Object.entries(arms)) lines.push(`  ${arm.padEnd(8)} ${formatMachineFigures(r.machine)}`);
  const cpuBound = arms.shoal === undefined ? undefined : cpuBoundNote(arms.shoal.machine, options.nodes);
  if (cpuBound !== undefined) lines.push(`  the shoal arm: ${cpuBound}`);
  const shoal = arms.shoal;
  if (shoal?.agents !== undefined && shoal.agents.length > 0) {
    lines.push(
      "",
      "shoal agents: CPU-s during the pulls (per GB of image; with start-up), peak RSS, peer bytes received and not kept, what each fetched from the origin and why, download rounds that stalled",
    );
    for (const a of shoal.agents) {
      lines.push(
        `  ${a.node.padEnd(8)} ${a.cpuSeconds.toFixed(1).padStart(6)} CPU-s (${a.cpuSecondsPerGB.toFixed(1)}/GB; ${a.cpuSecondsTotal.toFixed(1)})  ${(a.peakRssBytes / MB).toFixed(0)} MB  wasted ${(a.wastedPeerBytes / MB).toFixed(1)} MB (${((100 * a.wastedPeerBytes) / imageBytes).toFixed(1)} % of the image${
          Object.keys(a.wastedPeerBytesByReason).length === 0
            ? ""
            : `: ${Object.entries(a.wastedPeerBytesByReason)
                .map(([r, b]) => `${r} ${(b / MB).toFixed(1)}`)
                .join(", ")}`
        })${
          a.originBytes > 0
            ? `  origin ${(a.originBytes / imageBytes).toFixed(3)} × F (${Object.entries(a.originFetchesByReason)
                .map(([r, n]) => `${r} ×${n}`)
                .join(", ")})`
            : ""
        }${
          Object.keys(a.fallbacksByReason).length === 0
            ? ""
            : `  sent the runtime to the origin: ${Object.entries(a.fallbacksByReason)
                .map(([r, n]) => `${r} ×${n}`)
                .join(", ")}`
        }${
          Object.keys(a.stallsByReason).length === 0
            ? ""
            : `  rounds stalled: ${Object.entries(a.stallsByReason)
                .map(([r, n]) => `${r} ×${n}`)
                .join(", ")}`
        }`,
      );
    }
  }
  if (shoal !== undefined && arms.direct !== undefined) {
    lines.push(
      "",
      `shoal is ${(arms.direct.lastNodeSeconds / shoal.lastNodeSeconds).toFixed(2)}× faster than direct (last node); target ≥ 0.5·N = ${(0.5 * options.nodes).toFixed(1)}`,
    );
  }
  return lines.join("\n");
}

async function main(argv: readonly string[]): Promise<number> {
  let options: DistributionBenchOptions;
  try {
    options = parseDistributionBenchArgs(argv);
  } catch (error) {
    if (!(error instanceof BenchUsageError)) throw error;
    log(`error: ${error.message}\n\n${USAGE}`);
    return EXIT_USAGE;
  }
  if (options.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (process.getuid?.() !== 0) {
    log("error: the distribution benchmark needs root (network namespaces, tc)");
    return 1;
  }
  const nodeBytesPerSecond = (options.nodeMbit * MB) / BITS_PER_BYTE;
  const originBytesPerSecond = (options.originMbit * MB) / BITS_PER_BYTE;
  const work = await makeTempDir("bench-image");
  let cluster: NetnsCluster | undefined;
  try {
    log(`generating a ${options.imageMiB} MiB image in ${options.layers} layers…`);
    const layout = await generateImageLayout({
      dir: join(work, "image"),
      seed: "shoal-distribution-bench",
      layers: options.layers,
      totalBytes: options.imageMiB * MIB,
      tag: "bench",
    });
    const image = layout.images[0];
    if (image === undefined) throw new Error("the generated layout has no image");
    const imageBytes = image.imageBytes;
    const rates = { originBytesPerSecond, uploadBytesPerSecond: nodeBytesPerSecond, downloadBytesPerSecond: nodeBytesPerSecond };
    const bounds = distributionBounds(imageBytes, options.nodes, rates);
    const timeoutMs = Math.ceil((options.timeoutSeconds ?? TIMEOUT_BOUND_FACTOR * bounds.clientServerSeconds + TIMEOUT_MARGIN_S) * 1000);
    log(`starting ${options.nodes} node namespaces…`);
    cluster = await NetnsCluster.start({
      nodes: options.nodes,
      nodeUploadBytesPerSecond: nodeBytesPerSecond,
      nodeDownloadBytesPerSecond: nodeBytesPerSecond,
      originBytesPerSecond,
      shoal: false,
      containerd: false,
      containerdContent: options.containerdContent,
      tls: options.tls,
      // The controller as installed: the harness's short grant-stall timeout would move grants away from
      // grantees that a busy machine slows, and measure origin traffic production would not see.
      grantStallTimeout: null,
    });
    const ref = await cluster.pushImage(layout, "bench/app");
    await removeTempDir(work);
    const directHostsDir = join(cluster.runDir, "no-mirrors");
    await mkdir(directHostsDir, { recursive: true });
    const arms: Partial<Record<Arm, ArmResult>> = {};
    for (const arm of options.arms)
      arms[arm] = await runArm(arm, cluster, ref, layout.root.digest, imageBytes, bounds, timeoutMs, directHostsDir, options.puller);
    const result = {
      benchmark: "distribution",
      date: new Date().toISOString(),
      nodes: options.nodes,
      layers: options.layers,
      puller: options.puller,
      imageBytes,
      rates: { nodeMbit: options.nodeMbit, originMbit: options.originMbit, ...rates },
      bounds,
      arms,
      ...(arms.shoal !== undefined && arms.direct !== undefined
        ? { shoalSpeedupOverDirect: round(arms.direct.lastNodeSeconds / arms.shoal.lastNodeSeconds) }
        : {}),
    };
    process.stdout.write(`${report(options, imageBytes, bounds, arms)}\n`);
    if (options.json !== undefined) {
      await mkdir(dirname(options.json), { recursive: true });
      await writeFile(options.json, `${JSON.stringify(result, null, 2)}\n`);
      log(`wrote ${options.json}`);
    }
    if (options.svg !== undefined) {
      const names = cluster.nodes.map((n) => n.endpoint.name);
      const svg = renderChart({
        title: `${options.nodes} nodes × ${(imageBytes / MB).toFixed(0)} MB, ${options.nodeMbit} Mbit nodes, ${options.originMbit} Mbit origin`,
        nodeNames: names,
        arms: Object.entries(arms).map(([name, r]) => ({
          name,
          seconds: names.map((n) => r.nodes.find((x) => x.node === n && x.ok)?.seconds ?? null),
        })),
        p2pBoundSeconds: bounds.p2pSeconds,
        clientServerBoundSeconds: bounds.clientServerSeconds,
      });
      await mkdir(dirname(options.svg), { recursive: true });
      await writeFile(options.svg, svg);
      log(`wrote ${options.svg}`);
    }
    return Object.values(arms).every((r) => r.complete) ? 0 : 1;
  } finally {
    await cluster?.destroy();
    await removeTempDir(work);
  }
}

process.exitCode = await main(process.argv.slice(2));
