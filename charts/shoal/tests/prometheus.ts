// Debian's Prometheus (2.42) as a background process in its own temp dir, scraping loopback targets
// every second; stopped by its own PID.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { probeHttpStatus } from "../../../e2e/support/http-probe.js";
import { LOOPBACK_HOST, getFreePort } from "../../../e2e/support/ports.js";
import { DaemonProcess, makeTempDir, readTail, removeTempDir } from "../../../e2e/support/process.js";

export const PROMETHEUS_BINARY = "/usr/bin/prometheus";
const START_TIMEOUT_MS = 30_000;
const START_ATTEMPTS = 3;
const QUERY_TIMEOUT_MS = 10_000;

/** One element of an instant vector; `value` is [time, "number as text"]. */
export interface Sample {
  readonly metric: Record<string, string>;
  readonly value: [number, string];
}

export interface QueryResult {
  readonly status: string;
  readonly resultType?: string;
  readonly result: readonly Sample[];
  readonly error?: string;
}

export class Prometheus {
  private constructor(
    private readonly daemon: DaemonProcess,
    private readonly dir: string,
    readonly url: string,
  ) {}

  /** Starts Prometheus scraping `targets` (HOST:PORT, path /metrics) every second as job "shoal". */
  static async start(targets: readonly string[], signal: AbortSignal): Promise<Prometheus> {
    const dir = await makeTempDir("prometheus");
    try {
      const config = join(dir, "prometheus.yml");
      // JSON is YAML: no quoting rules to get wrong for the targets.
      await writeFile(
        config,
        JSON.stringify({
          global: { scrape_interval: "1s", scrape_timeout: "1s", evaluation_interval: "1s" },
          scrape_configs: [{ job_name: "shoal", static_configs: [{ targets }] }],
        }),
      );
      for (let attempt = 1; ; attempt++) {
        const port = await getFreePort();
        const log = join(dir, `prometheus-${attempt}.log`);
        const daemon = await DaemonProcess.spawn({
          name: "prometheus",
          command: PROMETHEUS_BINARY,
          args: [
            `--config.file=${config}`,
            `--storage.tsdb.path=${join(dir, "data")}`,
            `--web.listen-address=${LOOPBACK_HOST}:${port}`,
            "--log.level=warn",
          ],
          stdoutFile: log,
          stderrFile: log,
          cwd: dir,
        });
        const url = `http://${LOOPBACK_HOST}:${port}`;
        const deadline = Date.now() + START_TIMEOUT_MS;
        while (daemon.exitStatus === undefined && Date.now() < deadline && (await probeHttpStatus(`${url}/-/ready`, 1_000)) !== 200) {
          signal.throwIfAborted();
          await delay(100);
        }
        if (daemon.exitStatus === undefined && Date.now() < deadline) return new Prometheus(daemon, dir, url);
        const tail = await readTail(log);
        await daemon.stop();
        if (tail.includes("address already in use") && attempt < START_ATTEMPTS) continue;
        throw new Error(`prometheus did not start:\n${tail}`);
      }
    } catch (error) {
      await removeTempDir(dir);
      throw error;
    }
  }

  /** An instant query at the current time; the parsed `data` (or the error) of /api/v1/query. */
  async query(expr: string): Promise<QueryResult> {
    const response = await fetch(`${this.url}/api/v1/query?${new URLSearchParams({ query: expr }).toString()}`, {
      signal: AbortSignal.timeout(QUERY_TIMEOUT_MS),
    });
    const body = (await response.json()) as { status: string; data?: { resultType: string; result: Sample[] }; error?: string };
    return {
      status: body.status,
      resultType: body.data?.resultType,
      result: body.data?.result ?? [],
      ...(body.error === undefined ? {} : { error: body.error }),
    };
  }

  /** Waits until every target has been scraped successfully (`up == 1`) for a few samples. */
  async waitForTargets(count: number, timeoutMs: number, signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const up = await this.query("min_over_time(up[3s])");
      if (up.result.length === count && up.result.every((s) => s.value[1] === "1")) return;
      if (Date.now() > deadline)
        throw new Error(`prometheus scrapes ${up.result.length} of ${count} targets successfully: ${JSON.stringify(up.result)}`);
      await delay(250, undefined, { signal });
    }
  }

  async stop(): Promise<void> {
    try {
      await this.daemon.stop();
    } finally {
      await removeTempDir(this.dir);
    }
  }
}
