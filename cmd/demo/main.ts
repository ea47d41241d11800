import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, DEMO_V8_FLAGS, applyV8Flags, formatHelp, parseOptions } from "../../pkg/config/index.js";
import { generateImageLayout } from "../../pkg/imagegen/index.js";
import { LayoutRegistry } from "../../pkg/origin/index.js";
import { type DemoOptions, demoOptionSpecs } from "./options.js";
import { ProgressView, formatMB } from "../shoal/progress-view.js";
import { pullRound } from "./pull-round.js";
import { type ProcessGroups, cpuSnapshotIfAvailable, machineFigures, procStatsIfAvailable, runningPids } from "../../pkg/metrics/index.js";
import {
  type DemoResult,
  type NodeResult,
  type Rates,
  bounds,
  cpuSecondsPerGB,
  describeSetup,
  duplicatePeerBytes,
  formatReport,
  offloadPercent,
} from "./report.js";
import { Swarm, nodeBytesSince, trackerCountsSince } from "./swarm.js";

const SUMMARY = [
  "Runs a Shoal swarm on this machine, no cluster and no root: generates an image, serves it from an embedded",
  "origin registry with a capped egress, starts a tracker and N agents (child processes on loopback, each with",
  "capped upload and download), pulls the image through every agent at once, then distributes it client-server",
  "style for comparison, and reports times, bytes by source, origin offload and the P2P bound.",
].join("\n");
const REPOSITORY = "demo/app";
const TAG = "v1";
/** The warm-up round's image (--warm-up), in the same layout under its own tag. */
const WARM_UP_TAG = "warm-up";
/** `auto` timeout: this many times the client-server bound, plus a fixed margin for start-up and slow machines. */
const AUTO_TIMEOUT_BOUND_FACTOR = 4;
const AUTO_TIMEOUT_MARGIN_MS = 60_000;
/** Exit codes of a process ended by SIGINT / SIGTERM, as shells report them. */
const EXIT_SIGINT = 130;
const EXIT_SIGTERM = 143;

class Interrupted extends Error {
  constructor(readonly exitCode: number) {
    super("interrupted");
  }
}

/** `shoal demo`. Returns the exit code. */
export async function demoMain(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  let options: DemoOptions;
  try {
    const parsed = parseOptions(demoOptionSpecs, argv, env);
    if (parsed.help) {
      console.log(formatHelp("shoal demo [flags]", SUMMARY, demoOptionSpecs));
      return 0;
    }
    if (parsed.positionals.length > 0)
      throw new ConfigError("ERR_CONFIG_UNKNOWN_FLAG", `unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    options = parsed.options;
  } catch (error) {
    console.error(`shoal demo: ${error instanceof Error ? error.message : String(error)}`);
    return 2;
  }
  applyV8Flags(DEMO_V8_FLAGS);
  const controller = new AbortController();
  // Ctrl-C and SIGTERM abort whatever is running; cleanup below then stops every child by PID. Further
  // signals while cleaning up are ignored, so a second Ctrl-C cannot orphan the nodes.
  const onSignal = (signal: NodeJS.Signals): void => {
    if (controller.signal.aborted) return;
    if (!options.json) process.stderr.write(`\nshoal demo: ${signal}: stopping the nodes and removing temp files…\n`);
    controller.abort(new Interrupted(signal === "SIGINT" ? EXIT_SIGINT : EXIT_SIGTERM));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  let work: string | undefined;
  try {
    work = options.workDir ?? (await mkdtemp(join(tmpdir(), "shoal-demo-")));
    const result = await runDemo(options, work, controller.signal);
    console.log(options.json ? JSON.stringify(result, null, 2) : `\n${formatReport(result)}`);
    return result.nodes.every((n) => n.complete) ? 0 : 1;
  } catch (error) {
    const reason: unknown = controller.signal.reason;
    if (reason instanceof Interrupted) return reason.exitCode;
    console.error(`shoal demo: ${error instanceof Error ? error.message : String(error)}`);
    return 1;
  } finally {
    if (work !== undefined && options.workDir === undefined) await rm(work, { recursive: true, force: true, maxRetries: 3 });
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

async function runDemo(options: DemoOptions, work: string, signal: AbortSignal): Promise<DemoResult> {
  const say = (line: string): void => {
    if (!options.json) console.log(line);
  };
  const rates: Rates = {
    originBytesPerSecond: options.originRate,
    uploadBytesPerSecond: options.uploadRate,
    downloadBytesPerSecond: options.downloadRate ?? options.uploadRate,
  };
  say(
    `generating a ${formatMB(options.imageSize)} image with ${options.layers} layers${options.warmUp ? ", and another for the warm-up" : ""}…`,
  );
  if (options.warmUp) {
    // Other bytes (another seed), so the measured round finds nothing of its image in the agents' stores.
    await generateImageLayout({
      dir: join(work, "image"),
      seed: "shoal-demo-warm-up",
      layers: options.layers,
      totalBytes: options.imageSize,
      tag: WARM_UP_TAG,
      signal,
    });
  }
  const layout = await generateImageLayout({
    dir: join(work, "image"),
    seed: "shoal-demo",
    layers: options.layers,
    totalBytes: options.imageSize,
    tag: TAG,
    keepOtherTags: options.warmUp,
    signal,
  });
  const image = layout.images[0];
  if (image === undefined) throw new Error("the generated layout has no image");
  const imageBytes = image.imageBytes;
  const bound = bounds(imageBytes, options.nodes, rates);
  const timeoutMs =
    options.timeout === "auto"
      ? Math.ceil(AUTO_TIMEOUT_BOUND_FACTOR * bound.clientServer * 1000) + AUTO_TIMEOUT_MARGIN_MS
      : options.timeout;

  const origin = await LayoutRegistry.start({
    dir: layout.dir,
    ...(rates.originBytesPerSecond > 0 ? { egressBytesPerSecond: rates.originBytesPerSecond } : {}),
  });
  let swarm: Swarm | undefined;
  try {
    say(`starting a tracker and ${options.nodes} agents (origin ${origin.url})…`);
    // A kept work dir is reused: start every node with an empty store, or the round would not be cold.
    await rm(join(work, "nodes"), { recursive: true, force: true });
    await rm(join(work, "logs"), { recursive: true, force: true });
    await mkdir(join(work, "nodes"), { recursive: true });
    swarm = await Swarm.start({
      nodes: options.nodes,
      upstream: `${origin.host}=${origin.url}`,
      uploadBytesPerSecond: rates.uploadBytesPerSecond,
      dataDir: join(work, "nodes"),
      logDir: join(work, "logs"),
      signal,
    });
    const names = swarm.nodes.map((n) => n.name);
    const blobBytes = image.layerBytes + image.config.size;
    say(`\n${describeSetup(options.nodes, imageBytes, options.layers, rates)}`);
    const running = swarm;
    const targets = swarm.nodes.map((n) => ({ name: n.name, baseUrl: n.mirrorUrl, ns: origin.host }));
    // A failed round names the processes that died on their own, with their last log lines.
    const withDeaths = (error: unknown): never => {
      const deaths = running.deaths();
      throw deaths === "" || signal.aborted
        ? error
        : new Error(`${error instanceof Error ? error.message : String(error)}\n${deaths}`, { cause: error });
    };
    if (options.warmUp) {
      say("\nwarm-up: every node pulls another image of the same size through its agent (not measured)…");
      await pullRound({
        targets,
        repository: REPOSITORY,
        reference: WARM_UP_TAG,
        downloadBytesPerSecond: rates.downloadBytesPerSecond,
        timeoutMs,
        signal,
      }).catch(withDeaths);
    }
    say("\nP2P: every node pulls through its own agent");
    const p2pOriginBefore = origin.bytesServed;
    const cpuBefore = await Promise.all(swarm.nodes.map((n) => procStatsIfAvailable(n.process.pid)));
    // This process is the origin registry and the pullers that stand in for each node's runtime.
    const groups: ProcessGroups = {
      agents: runningPids(swarm.nodes.map((n) => n.process.pid)),
      controller: runningPids([swarm.controllerPid]),
      demo: [process.pid],
    };
    const machineBefore = await cpuSnapshotIfAvailable(groups);
    // Counters are the agents' since they started: with a warm-up, the round's are what it added.
    const bytesBefore = options.warmUp ? await Promise.all(swarm.nodes.map((n) => running.nodeBytes(n, signal))) : undefined;
    const trackerBefore = options.warmUp ? await running.trackerCounts(signal).catch(() => null) : undefined;
    const p2p = await pullRound({
      targets,
      repository: REPOSITORY,
      reference: TAG,
      downloadBytesPerSecond: rates.downloadBytesPerSecond,
      timeoutMs,
      signal,
      ...(options.json ? {} : { view: new ProgressView(process.stdout, names, blobBytes) }),
    }).catch(withDeaths);
    const machineAfter = machineBefore === undefined ? undefined : await cpuSnapshotIfAvailable(groups);
    const machine = machineBefore === undefined || machineAfter === undefined ? null : machineFigures(machineBefore, machineAfter);
    const originBytes = origin.bytesServed - p2pOriginBefore;
    const nodes: NodeResult[] = await Promise.all(
      p2p.map(async (outcome, i) => {
        const node = running.nodes[i];
        if (node === undefined) throw new Error(`no node for ${outcome.name}`);
        const bytes = nodeBytesSince(await running.nodeBytes(node, signal), bytesBefore?.[i]);
        const before = cpuBefore[i];
        const after = await procStatsIfAvailable(node.process.pid);
        return {
          name: outcome.name,
          seconds: roundSeconds(outcome.seconds),
          bytes: outcome.bytes,
          bytesFromOrigin: bytes.origin,
          bytesFromPeers: bytes.peers,
          bytesFromLocal: bytes.local,
          bytesToPeers: bytes.sentToPeers,
          duplicatePeerBytes: duplicatePeerBytes(imageBytes, bytes),
          wastedPeerBytes: bytes.wasted,
          agentCpuSeconds:
            before === undefined || after === undefined ? null : Math.round((after.cpuSeconds - before.cpuSeconds) * 100) / 100,
          agentPeakRssBytes: after?.peakRssBytes ?? null,
          trackerLookups: bytes.lookups,
          trackerNotices: bytes.notices,
          trackerNoticeDeltas: bytes.noticeDeltas,
          digestsVerified: outcome.digestsVerified,
          complete: outcome.bytes === imageBytes,
        };
      }),
    );
    const trackerAfter = await running.trackerCounts(signal).catch(() => null);
    // Unknown when either reading failed (a total would count the warm-up too).
    const trackerCounts = trackerAfter === null || trackerBefore === null ? null : trackerCountsSince(trackerAfter, trackerBefore);
    // The agents are done: stop them before the client-server round so they take no CPU from it.
    await swarm.stop();
    swarm = undefined;

    let clientServer: { seconds: number; originBytes: number } | undefined;
    if (options.compare) {
      say("\nclient-server: every node pulls straight from the origin");
      const before = origin.bytesServed;
      const direct = await pullRound({
        targets: names.map((name) => ({ name, baseUrl: origin.url })),
        repository: REPOSITORY,
        reference: TAG,
        downloadBytesPerSecond: rates.downloadBytesPerSecond,
        timeoutMs,
        signal,
        ...(options.json ? {} : { view: new ProgressView(process.stdout, names, blobBytes) }),
      });
      clientServer = { seconds: roundSeconds(Math.max(...direct.map((o) => o.seconds))), originBytes: origin.bytesServed - before };
    }
    return {
      nodeCount: options.nodes,
      layers: options.layers,
      warmUp: options.warmUp,
      rates,
      imageBytes,
      originBytes,
      offloadPercent: Math.round(offloadPercent(originBytes, options.nodes * imageBytes) * 100) / 100,
      p2pSeconds: Math.max(...nodes.map((n) => n.seconds)),
      clientServerSeconds: clientServer?.seconds ?? null,
      clientServerOriginBytes: clientServer?.originBytes ?? null,
      boundSeconds: roundSeconds(bound.p2p),
      clientServerBoundSeconds: roundSeconds(bound.clientServer),
      agentCpuSecondsPerGB: roundHundredths(cpuSecondsPerGB(nodes, options.nodes * imageBytes)),
      machine,
      tracker: trackerCounts,
      nodes,
    };
  } finally {
    await swarm?.stop();
    await origin.close();
  }
}

function roundHundredths(value: number | null): number | null {
  return value === null ? null : Math.round(value * 100) / 100;
}

/** Milliseconds are all the precision these timings have. */
function roundSeconds(seconds: number): number {
  return Math.round(seconds * 1000) / 1000;
}
