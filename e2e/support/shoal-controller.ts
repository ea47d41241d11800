import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { HarnessError } from "./errors.js";
import { DaemonProcess, inNetns, makeTempDir, removeTempDir, waitUntil } from "./process.js";
import { SHOAL_MAIN } from "./shoal-agent.js";
import { SHOAL_NODE_FLAGS, shoalNodeEnv } from "../../pkg/config/index.js";

export const CONTROLLER_START_TIMEOUT_MS = 15_000;

export interface ShoalControllerOptions {
  /** 0 (default) picks a free one; pass a fixed port to restart a tracker where agents expect it. */
  readonly port?: number;
  /** --grant-stall-timeout: default 3 s (tests see grants move quickly); null for the controller's own default. */
  readonly grantStallTimeout?: string | null | undefined;
  /** Listen address for the tracker and metrics; default 127.0.0.1. */
  readonly host?: string;
  /** Run inside this network namespace (`ip netns exec`); `host` is then an address of that namespace. */
  readonly netns?: string;
  /** More flags, e.g. `--membership static --allowed-peers …`. */
  readonly extraArgs?: readonly string[];
  /** Parent of the log dir; default the system temp dir. */
  readonly parentDir?: string;
}

/** A `shoal controller` child process (static/open membership) on loopback, stopped by its PID. */
export class ShoalController {
  private constructor(
    readonly daemon: DaemonProcess,
    private readonly logDir: string,
    readonly trackerAddress: string,
    readonly metricsUrl: string,
  ) {}

  /** `port` 0 picks a free one; pass a fixed port to restart a tracker where agents expect it. */
  static async start(options: ShoalControllerOptions = {}): Promise<ShoalController> {
    const logDir = await makeTempDir("controller-log", options.parentDir);
    const host = options.host ?? "127.0.0.1";
    const logFile = join(logDir, "controller.log");
    const daemon = await DaemonProcess.spawn({
      name: "shoal-controller",
      ...inNetns(options.netns, process.execPath, [
        ...SHOAL_NODE_FLAGS,
        SHOAL_MAIN,
        "controller",
        "--listen",
        `${host}:${options.port ?? 0}`,
        "--metrics-addr",
        `${host}:0`,
        ...(options.grantStallTimeout === null ? [] : ["--grant-stall-timeout", options.grantStallTimeout ?? "3s"]),
        ...(options.extraArgs ?? []),
      ]),
      stdoutFile: logFile,
      stderrFile: logFile,
      env: { ...process.env, ...shoalNodeEnv("controller") },
    });
    try {
      let started: { tracker: string; metrics: string } | undefined;
      await waitUntil(
        async () => {
          const log = await readFile(logFile, "utf8");
          if (daemon.exitStatus !== undefined) throw new HarnessError("ERR_HARNESS_START", `shoal controller exited: ${log}`);
          for (const line of log.split("\n")) {
            if (!line.includes('"controller started"')) continue;
            const parsed = JSON.parse(line) as { tracker?: string; metrics?: string };
            if (parsed.tracker !== undefined && parsed.metrics !== undefined)
              started = { tracker: parsed.tracker, metrics: parsed.metrics };
          }
          return started !== undefined;
        },
        { timeoutMs: CONTROLLER_START_TIMEOUT_MS, what: "shoal controller start" },
      );
      if (started === undefined) throw new HarnessError("ERR_HARNESS_START", "shoal controller did not report its address");
      return new ShoalController(daemon, logDir, started.tracker, started.metrics);
    } catch (error) {
      await daemon.stop();
      await removeTempDir(logDir);
      throw error;
    }
  }

  get port(): number {
    return Number(this.trackerAddress.split(":").at(-1));
  }

  /** Ends the process at once, as a crash or a node loss would. */
  async kill(): Promise<void> {
    await this.daemon.stop(0);
    await removeTempDir(this.logDir);
  }

  async stop(): Promise<void> {
    await this.daemon.stop();
    await removeTempDir(this.logDir);
  }
}
