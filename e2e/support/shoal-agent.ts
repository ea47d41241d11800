import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { HarnessError } from "./errors.js";
import { metricValue } from "./metrics-text.js";
import { DaemonProcess, inNetns, makeTempDir, removeTempDir, waitUntil } from "./process.js";
import { SHOAL_NODE_FLAGS, shoalNodeEnv } from "../../pkg/config/index.js";

/** The compiled CLI, next to this file in dist/. */
export const SHOAL_MAIN = fileURLToPath(new URL("../../cmd/shoal/main.js", import.meta.url));
export const AGENT_START_TIMEOUT_MS = 15_000;

export interface ShoalAgentOptions {
  /** `--upstream` values, e.g. `127.0.0.1:5000=http://127.0.0.1:5000`. */
  readonly upstreams: readonly string[];
  /** Reuse a data dir (restart tests); default: a fresh temp dir removed on stop. */
  readonly dataDir?: string;
  /** Fixed mirror port (e.g. to restart on the same address); default: a free one. */
  readonly mirrorPort?: number;
  readonly extraArgs?: readonly string[];
  /** Loopback address for the mirror, metrics and peer listeners (e.g. 127.0.0.12); default 127.0.0.1. */
  readonly host?: string;
  /** Tracker HOST:PORT; the agent then serves and fetches pieces. */
  readonly tracker?: string;
  readonly nodeName?: string;
  readonly zone?: string;
  /** Run inside this network namespace (`ip netns exec`); `host` is then an address of that namespace. */
  readonly netns?: string;
  /** Parent of the log dir (and of the data dir when none is given); default the system temp dir. */
  readonly parentDir?: string;
  /**
   * Serve from this containerd's content store (--containerd-address and friends). Default: off
   * (--containerd-content=false), so no test agent ever touches a containerd the test did not start.
   */
  readonly containerd?: { readonly socket: string; readonly namespace: string; readonly contentDir?: string };
}

/** A `shoal agent` child process on loopback, stopped by its PID. */
export class ShoalAgent {
  private constructor(
    readonly daemon: DaemonProcess,
    readonly dataDir: string,
    private readonly ownsDataDir: boolean,
    readonly mirrorUrl: string,
    readonly metricsUrl: string,
    readonly logFile: string,
    /** host:port of its peer server (with --tracker). */
    readonly peerAddress: string | undefined,
  ) {}

  static async start(options: ShoalAgentOptions): Promise<ShoalAgent> {
    const logDir = await makeTempDir("agent-log", options.parentDir);
    const logFile = join(logDir, "agent.log");
    let dataDir = options.dataDir;
    let daemon: DaemonProcess | undefined;
    try {
      dataDir ??= await makeTempDir("agent-data", options.parentDir);
      const spawned = await DaemonProcess.spawn({
        name: "shoal-agent",
        ...inNetns(options.netns, process.execPath, [
          ...SHOAL_NODE_FLAGS,
          SHOAL_MAIN,
          "agent",
          "--mirror-addr",
          `${options.host ?? "127.0.0.1"}:${options.mirrorPort ?? 0}`,
          "--metrics-addr",
          `${options.host ?? "127.0.0.1"}:0`,
          ...(options.tracker === undefined ? [] : ["--tracker", options.tracker, "--peer-addr", `${options.host ?? "127.0.0.1"}:0`]),
          ...(options.nodeName === undefined ? [] : ["--node-name", options.nodeName]),
          ...(options.zone === undefined ? [] : ["--zone", options.zone]),
          "--data-dir",
          dataDir,
          "--shutdown-grace",
          "1s",
          ...options.upstreams.flatMap((u) => ["--upstream", u]),
          ...containerdArgs(options.containerd),
          ...(options.extraArgs ?? []),
        ]),
        stdoutFile: logFile,
        stderrFile: logFile,
        env: { ...process.env, ...shoalNodeEnv("agent") },
      });
      daemon = spawned;
      let started: { mirror: string; metrics: string; peer?: string } | undefined;
      await waitUntil(
        async () => {
          if (spawned.exitStatus !== undefined)
            throw new HarnessError("ERR_HARNESS_START", `shoal agent exited: ${await readFile(logFile, "utf8")}`);
          started = findStarted(await readFile(logFile, "utf8"));
          return started !== undefined;
        },
        { timeoutMs: AGENT_START_TIMEOUT_MS, what: "shoal agent start" },
      );
      if (started === undefined) throw new HarnessError("ERR_HARNESS_START", "shoal agent did not report its addresses");
      return new ShoalAgent(spawned, dataDir, options.dataDir === undefined, started.mirror, started.metrics, logFile, started.peer);
    } catch (error) {
      // Nothing of a failed start stays behind: the process, its log dir, and a data dir made for it.
      await daemon?.stop();
      await removeTempDir(logDir);
      if (options.dataDir === undefined && dataDir !== undefined) await removeTempDir(dataDir);
      throw error;
    }
  }

  /** Value of a Prometheus series from /metrics, summed over series matching the labels. */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    return metricValue(await (await fetch(`${this.metricsUrl}/metrics`)).text(), name, labels);
  }

  /**
   * Stops the agent and removes its log dir, and its data dir unless the caller passed one or asks to keep
   * it (to start another agent on it; the caller then removes it). SHOAL_E2E_KEEP keeps both.
   */
  async stop(options: { readonly keepDataDir?: boolean } = {}): Promise<void> {
    await this.daemon.stop();
    await this.removeDirs(options.keepDataDir === true);
  }

  /** Ends the process at once (SIGKILL), as a crash or a node loss would, and removes its dirs as stop() does. */
  async kill(): Promise<void> {
    await this.daemon.stop(0);
    await this.removeDirs(false);
  }

  private async removeDirs(keepDataDir: boolean): Promise<void> {
    await removeTempDir(dirname(this.logFile));
    if (this.ownsDataDir && !keepDataDir) await removeTempDir(this.dataDir);
  }
}

function containerdArgs(containerd: ShoalAgentOptions["containerd"]): string[] {
  if (containerd === undefined) return ["--containerd-content=false"];
  return [
    "--containerd-address",
    containerd.socket,
    "--containerd-namespace",
    containerd.namespace,
    ...(containerd.contentDir === undefined ? [] : ["--containerd-content-dir", containerd.contentDir]),
  ];
}

function findStarted(log: string): { mirror: string; metrics: string; peer?: string } | undefined {
  for (const line of log.split("\n")) {
    if (!line.includes('"agent started"')) continue;
    const parsed = JSON.parse(line) as { mirror?: string; metrics?: string; peer?: string };
    if (parsed.mirror !== undefined && parsed.metrics !== undefined)
      return { mirror: parsed.mirror, metrics: parsed.metrics, ...(parsed.peer === undefined ? {} : { peer: parsed.peer }) };
  }
  return undefined;
}
