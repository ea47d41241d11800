import { mkdir } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ThrowawayPki, tlsArgs } from "../../pkg/identity/index.js";
import { ShoalProcess } from "./shoal-process.js";

/** Start-up of one process, generous for a loaded 2-core machine starting several at once. */
const PROCESS_START_TIMEOUT_MS = 30_000;
/** Agents open their tracker session right after start; pulling before that would go to the origin. */
const TRACKER_CONNECT_TIMEOUT_MS = 15_000;
const TRACKER_POLL_MS = 50;
/** Node i listens on 127.0.0.(FIRST_HOST_OCTET + i), like one address per node in a cluster. */
const FIRST_HOST_OCTET = 11;

export interface SwarmNode {
  readonly name: string;
  readonly mirrorUrl: string;
  readonly metricsUrl: string;
  readonly process: ShoalProcess;
}

export interface SwarmOptions {
  readonly nodes: number;
  /** `REGISTRY=URL` of the origin every agent mirrors. */
  readonly upstream: string;
  readonly uploadBytesPerSecond: number;
  /** Each agent's data dir is a subdirectory named after its node. */
  readonly dataDir: string;
  /** Each process's log (its JSON log lines) is copied to a file here. */
  readonly logDir: string;
  readonly signal: AbortSignal;
}

/** Where each node's agent came from, from its /metrics after the pulls. */
export interface NodeBytes {
  readonly origin: number;
  readonly peers: number;
  readonly local: number;
  /** What it uploaded to other agents. */
  readonly sentToPeers: number;
  /** Peer bytes received and not kept, by reason (shoal_peer_bytes_wasted_total). */
  readonly wasted: Readonly<Record<WasteReason, number>>;
  /** Tracker lookups; notices received from the tracker, and of them those that carried the change. */
  readonly lookups: number;
  readonly notices: number;
  readonly noticeDeltas: number;
}

/** Each counter of `after` less the same counter of `before` (counters read before and after a round). */
function countersSince<T extends { readonly [K in keyof T]: number }>(after: T, before: T): T {
  return Object.fromEntries(Object.entries(after).map(([name, value]) => [name, (value as number) - before[name as keyof T]])) as T;
}

/** What `after` counted beyond `before`; `after` itself without a `before`. */
export function nodeBytesSince(after: NodeBytes, before: NodeBytes | undefined): NodeBytes {
  if (before === undefined) return after;
  const { wasted, ...counts } = after;
  const { wasted: wastedBefore, ...countsBefore } = before;
  return { ...countersSince(counts, countsBefore), wasted: countersSince(wasted, wastedBefore) };
}

/** What `after` counted beyond `before` (the controller's counters); `after` itself without a `before`. */
export function trackerCountsSince(after: TrackerCounts, before: TrackerCounts | undefined): TrackerCounts {
  return before === undefined ? after : countersSince(after, before);
}

/** The tracker's side of the round: lookups answered, notices sent, and of them those carrying the change. */
export interface TrackerCounts {
  readonly lookupsServed: number;
  readonly noticesSent: number;
  readonly noticeDeltas: number;
}

export const WASTE_REASONS = ["already_held", "unverifiable", "bad", "incomplete"] as const;
export type WasteReason = (typeof WASTE_REASONS)[number];

/** A tracker (`shoal controller`) and N agents, each its own child process on its own loopback address. */
export class Swarm {
  private constructor(
    /** The controller's metrics endpoint (its tracker's counters). */
    private readonly trackerMetricsUrl: string,
    readonly nodes: readonly SwarmNode[],
    /** The tracker and every agent. */
    private readonly all: readonly ShoalProcess[],
    private readonly controller: ShoalProcess,
  ) {}

  /** The controller's process ID (undefined once it exited). */
  get controllerPid(): number | undefined {
    return this.controller.pid;
  }

  static async start(options: SwarmOptions): Promise<Swarm> {
    const started: ShoalProcess[] = [];
    try {
      await mkdir(options.logDir, { recursive: true });
      // Mutual TLS as in a cluster, with a CA made for this run.
      const pki = await ThrowawayPki.create(join(options.dataDir, "pki"), "shoal demo CA (throwaway)");
      const controllerTls = await pki.issue({ role: "controller", name: "tracker", ips: ["127.0.0.1"] });
      const controller = await ShoalProcess.start({
        name: "tracker",
        command: "controller",
        args: ["--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--log-level", "info", ...tlsArgs(controllerTls)],
        readyMessage: "controller started",
        readyTimeoutMs: PROCESS_START_TIMEOUT_MS,
        logFile: join(options.logDir, "tracker.log"),
        signal: options.signal,
      });
      started.push(controller.process);
      const tracker = String(controller.ready.tracker);
      const hosts = await loopbackHosts(options.nodes);
      const results = await Promise.allSettled(
        hosts.map(async (host, i) => {
          const name = `node-${i + 1}`;
          const agentTls = await pki.issue({ role: "agent", name, ips: [host] });
          const agent = await ShoalProcess.start({
            name,
            command: "agent",
            args: [
              ...["--mirror-addr", `${host}:0`, "--metrics-addr", `${host}:0`, "--peer-addr", `${host}:0`],
              ...["--data-dir", join(options.dataDir, name), "--tracker", tracker, "--node-name", name],
              ...["--upstream", options.upstream, "--upload-rate", String(options.uploadBytesPerSecond)],
              ...["--shutdown-grace", "1s", "--log-level", "info"],
              // Six agents on one machine: none of them is a node's containerd mirror.
              "--containerd-content=false",
              ...tlsArgs(agentTls),
            ],
            readyMessage: "agent started",
            readyTimeoutMs: PROCESS_START_TIMEOUT_MS,
            logFile: join(options.logDir, `${name}.log`),
            signal: options.signal,
          });
          started.push(agent.process);
          return { name, mirrorUrl: String(agent.ready.mirror), metricsUrl: String(agent.ready.metrics), process: agent.process };
        }),
      );
      const failed = results.find((r) => r.status === "rejected");
      if (failed) throw failed.reason;
      const nodes = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
      const swarm = new Swarm(String(controller.ready.metrics), nodes, started, controller.process);
      await swarm.waitTrackerSessions(options.signal);
      return swarm;
    } catch (error) {
      await Promise.all(started.map((p) => p.stop()));
      throw error;
    }
  }

  /** Bytes each agent got from the origin, from peers and from its own store, read from its /metrics. */
  async nodeBytes(node: SwarmNode, signal: AbortSignal): Promise<NodeBytes> {
    const text = await (await fetch(`${node.metricsUrl}/metrics`, { signal })).text();
    return {
      origin: metricValue(text, "shoal_origin_bytes_fetched_total"),
      peers: metricValue(text, "shoal_peer_bytes_received_total"),
      local: metricValue(text, "shoal_blob_bytes_served_total", 'source="local"'),
      sentToPeers: metricValue(text, "shoal_peer_bytes_sent_total"),
      wasted: Object.fromEntries(
        WASTE_REASONS.map((reason) => [reason, metricValue(text, "shoal_peer_bytes_wasted_total", `reason="${reason}"`)]),
      ) as Record<WasteReason, number>,
      lookups: metricValue(text, "shoal_tracker_lookups_total"),
      notices: metricValue(text, "shoal_tracker_notices_received_total"),
      noticeDeltas: metricValue(text, "shoal_tracker_notices_received_total", 'kind="delta"'),
    };
  }

  /** What the tracker answered and sent so far, from the controller's /metrics. */
  async trackerCounts(signal: AbortSignal): Promise<TrackerCounts> {
    const text = await (await fetch(`${this.trackerMetricsUrl}/metrics`, { signal })).text();
    return {
      lookupsServed: metricValue(text, "shoal_tracker_lookups_served_total"),
      noticesSent: metricValue(text, "shoal_tracker_notices_sent_total"),
      noticeDeltas: metricValue(text, "shoal_tracker_notice_deltas_total"),
    };
  }

  /** Processes that died on their own, with their last log lines: what explains a failed round. */
  deaths(): string {
    return this.all
      .filter((p) => p.exit !== undefined)
      .map((p) => `${p.name} exited (${p.exit ?? ""}); its last log lines:\n${p.logTail()}`)
      .join("\n");
  }

  async stop(): Promise<void> {
    await Promise.all(this.all.map((p) => p.stop()));
  }

  private async waitTrackerSessions(signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + TRACKER_CONNECT_TIMEOUT_MS;
    for (const node of this.nodes) {
      for (;;) {
        const text = await (await fetch(`${node.metricsUrl}/metrics`, { signal })).text();
        if (metricValue(text, "shoal_tracker_connected") === 1) break;
        if (Date.now() > deadline)
          throw new Error(`${node.name} did not connect to the tracker within ${TRACKER_CONNECT_TIMEOUT_MS} ms\n${node.process.logTail()}`);
        await sleep(TRACKER_POLL_MS, undefined, { signal });
      }
    }
  }
}

/** Sum of a Prometheus series' samples whose labels contain `labels` (text exposition format). */
export function metricValue(text: string, name: string, labels = ""): number {
  let total = 0;
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (match?.[1] !== name || !(match[2] ?? "").includes(labels)) continue;
    total += Number(match[3]);
  }
  return total;
}

/**
 * One loopback address per node where the OS routes all of 127/8 to loopback (Linux); elsewhere
 * (macOS has only 127.0.0.1 by default) every node shares 127.0.0.1 on its own ports.
 */
async function loopbackHosts(count: number): Promise<string[]> {
  const first = `127.0.0.${FIRST_HOST_OCTET}`;
  const usable = await new Promise<boolean>((resolve) => {
    const server = createServer();
    server.once("error", () => {
      resolve(false);
    });
    server.listen(0, first, () => {
      server.close(() => {
        resolve(true);
      });
    });
  });
  return Array.from({ length: count }, (_, i) => (usable ? `127.0.0.${FIRST_HOST_OCTET + i}` : "127.0.0.1"));
}
