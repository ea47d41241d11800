import { randomBytes } from "node:crypto";
import { mkdir, open, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { HarnessError } from "./errors.js";
import { probeHttpStatus } from "./http-probe.js";
import { LOOPBACK_HOST, getFreePort } from "./ports.js";
import { DaemonProcess, debugLog, describeError, inNetns, makeTempDir, readTail, removeTempDir } from "./process.js";

export const DOCKER_REGISTRY_BINARY = "/usr/bin/docker-registry";
/** It starts in ~50 ms; the margin is for a loaded CI machine. */
export const REGISTRY_START_TIMEOUT_MS = 15_000;
/** Another process may grab the port between our probe and the registry's bind. */
const START_ATTEMPTS = 3;
const PROBE_TIMEOUT_MS = 1_000;
const PROBE_INTERVAL_MS = 25;
/** How long the log must stay unchanged before counting: it is written just after each response. */
export const LOG_SETTLE_MS = 150;
const LOG_SETTLE_TIMEOUT_MS = 5_000;

export interface DockerRegistryOptions {
  /** Pull-through cache mode (`proxy.remoteurl`), e.g. another registry's `url`. */
  readonly proxyRemoteUrl?: string;
  readonly binary?: string;
  readonly startTimeoutMs?: number;
  /**
   * Run inside a network namespace (`ip netns exec NAME`), listening on `host:port` there. Readiness
   * then comes from the registry's "listening on" log line, since the caller cannot reach the address.
   */
  readonly netns?: { readonly name: string; readonly host: string; readonly port: number };
  /** Where the temp dir is created; default the system temp dir. */
  readonly parentDir?: string;
}

/** One blob GET as logged by the registry's "response completed" line. */
export interface BlobGet {
  readonly repository: string;
  readonly digest: string;
  readonly status: number;
  /** `http.response.written`: body bytes actually written to the client (partial on a range or abort). */
  readonly bytes: number;
  /** Request URI including any query, e.g. `?ns=127.0.0.1%3A5000` from containerd mirrors. */
  readonly uri: string;
  readonly userAgent: string;
}

/** A position in the registry's log; counts `since` a mark ignore everything logged before it. */
export interface LogMark {
  readonly offset: number;
}

export interface LogQueryOptions {
  readonly since?: LogMark;
  /** Wait until the log has been quiet this long first, so responses just finished are counted. */
  readonly settleMs?: number;
}

const BLOB_PATH = /^\/v2\/(.+)\/blobs\/(sha256:[a-f0-9]{64})(?:\?.*)?$/;

/**
 * Debian's docker-registry (CNCF distribution 2.8) with its own config in a temp dir: filesystem
 * storage, 127.0.0.1 only, no auth, JSON logs at info level. Its stderr (JSON application log with
 * one "response completed" line per request, carrying `http.response.written`) is what blob
 * byte counting parses; its stdout is the combined-format access log.
 */
export class DockerRegistry {
  private constructor(
    readonly tempDir: string,
    readonly port: number,
    private readonly daemon: DaemonProcess,
    private readonly listenHost: string = LOOPBACK_HOST,
  ) {}

  static async start(options: DockerRegistryOptions = {}): Promise<DockerRegistry> {
    const tempDir = await makeTempDir("registry", options.parentDir);
    try {
      const { netns } = options;
      if (netns !== undefined) {
        const daemon = await launch(tempDir, `${netns.host}:${netns.port}`, options);
        if (await waitListening(daemon, options.startTimeoutMs ?? REGISTRY_START_TIMEOUT_MS)) {
          debugLog(`docker-registry ready at http://${netns.host}:${netns.port} in netns ${netns.name} (${tempDir})`);
          return new DockerRegistry(tempDir, netns.port, daemon, netns.host);
        }
        const tail = await daemon.logTail();
        await daemon.stop();
        throw new HarnessError(
          "ERR_HARNESS_START",
          `docker-registry did not start in netns ${netns.name}; config ${join(tempDir, "config.yml")}\n${tail}`,
        );
      }
      for (let attempt = 1; ; attempt++) {
        const port = await getFreePort();
        const daemon = await launch(tempDir, `${LOOPBACK_HOST}:${port}`, options);
        const outcome = await waitReady(daemon, port, options.startTimeoutMs ?? REGISTRY_START_TIMEOUT_MS);
        if (outcome === "ready") {
          debugLog(`docker-registry ready at http://${LOOPBACK_HOST}:${port} (${tempDir})`);
          return new DockerRegistry(tempDir, port, daemon);
        }
        const tail = await daemon.logTail();
        await daemon.stop();
        if (outcome === "port-taken" && attempt < START_ATTEMPTS) continue;
        throw new HarnessError(
          "ERR_HARNESS_START",
          `docker-registry did not start (${outcome}); config ${join(tempDir, "config.yml")}\n${tail}`,
        );
      }
    } catch (error) {
      await removeTempDir(tempDir);
      throw error;
    }
  }

  get pid(): number {
    return this.daemon.pid;
  }

  /** `127.0.0.1:PORT` (or the netns address), as written in image references. */
  get host(): string {
    return `${this.listenHost}:${this.port}`;
  }

  get url(): string {
    return `http://${this.host}`;
  }

  get storageDir(): string {
    return join(this.tempDir, "storage");
  }

  /** JSON application log (stderr). */
  get logFile(): string {
    return join(this.tempDir, "registry.log");
  }

  /** Combined-format access log (stdout). */
  get accessLogFile(): string {
    return join(this.tempDir, "access.log");
  }

  /** Marks the current end of the log, to count only what is served afterwards. */
  async mark(): Promise<LogMark> {
    return { offset: (await stat(this.logFile)).size };
  }

  /** Blob GETs with a 2xx status logged since `since` (default: since start). */
  async blobGets(options: LogQueryOptions = {}): Promise<BlobGet[]> {
    await this.settle(options.settleMs ?? LOG_SETTLE_MS);
    const gets: BlobGet[] = [];
    for (const line of await readLines(this.logFile, options.since?.offset ?? 0)) {
      const get = parseBlobGet(line);
      if (get !== undefined) gets.push(get);
    }
    return gets;
  }

  /** Body bytes the registry wrote for successful blob GETs: what clients fetched from this origin. */
  async servedBlobBytes(options: LogQueryOptions = {}): Promise<number> {
    return (await this.blobGets(options)).reduce((sum, get) => sum + get.bytes, 0);
  }

  async logTail(): Promise<string> {
    return this.daemon.logTail();
  }

  /** Kills the registry by PID, waits for it to exit, removes its temp dir. Idempotent. */
  async stop(): Promise<void> {
    try {
      await this.daemon.stop();
    } finally {
      await removeTempDir(this.tempDir);
    }
  }

  private async settle(settleMs: number): Promise<void> {
    if (settleMs <= 0) return;
    const deadline = Date.now() + LOG_SETTLE_TIMEOUT_MS;
    let size = (await stat(this.logFile)).size;
    while (Date.now() < deadline) {
      await delay(settleMs);
      const next = (await stat(this.logFile)).size;
      if (next === size) return;
      size = next;
    }
  }
}

async function launch(tempDir: string, addr: string, options: DockerRegistryOptions): Promise<DaemonProcess> {
  const storage = join(tempDir, "storage");
  await mkdir(storage, { recursive: true });
  const configFile = join(tempDir, "config.yml");
  await writeFile(configFile, registryConfig(storage, addr, options.proxyRemoteUrl));
  // REGISTRY_* variables override the config file; none may leak in from the caller's environment.
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("REGISTRY_")));
  return DaemonProcess.spawn({
    name: "docker-registry",
    ...inNetns(options.netns?.name, options.binary ?? DOCKER_REGISTRY_BINARY, ["serve", configFile]),
    stdoutFile: join(tempDir, "access.log"),
    stderrFile: join(tempDir, "registry.log"),
    env,
  });
}

/** YAML with JSON-quoted strings (valid YAML scalars), so paths and URLs need no escaping rules. */
function registryConfig(storage: string, addr: string, proxyRemoteUrl: string | undefined): string {
  const q = (value: string): string => JSON.stringify(value);
  const lines = [
    "version: 0.1",
    "log:",
    "  level: info",
    "  formatter: json",
    "  accesslog:",
    "    disabled: false",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${q(storage)}`,
    "  delete:",
    "    enabled: true",
    "  maintenance:",
    "    uploadpurging:",
    "      enabled: false",
    "http:",
    `  addr: ${q(addr)}`,
    // A fixed secret silences the "No HTTP secret provided" warning; uploads only need it stable per process.
    `  secret: ${q(randomBytes(16).toString("hex"))}`,
    "  headers:",
    "    X-Content-Type-Options: [nosniff]",
  ];
  if (proxyRemoteUrl !== undefined) lines.push("proxy:", `  remoteurl: ${q(proxyRemoteUrl)}`);
  return `${lines.join("\n")}\n`;
}

type StartOutcome = "ready" | "exited" | "port-taken" | "timeout";

async function waitReady(daemon: DaemonProcess, port: number, timeoutMs: number): Promise<StartOutcome> {
  const deadline = Date.now() + timeoutMs;
  const url = `http://${LOOPBACK_HOST}:${port}/v2/`;
  while (Date.now() < deadline) {
    if (daemon.exitStatus !== undefined) {
      const log = await readTail(daemon.options.stderrFile);
      return log.includes("address already in use") ? "port-taken" : "exited";
    }
    if ((await probeHttpStatus(url, PROBE_TIMEOUT_MS)) === 200) return "ready";
    await delay(PROBE_INTERVAL_MS);
  }
  return "timeout";
}

/** The registry logs "listening on ADDR" once its socket is bound (connections queue from then on). */
async function waitListening(daemon: DaemonProcess, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (daemon.exitStatus !== undefined) return false;
    if ((await readTail(daemon.options.stderrFile)).includes('"msg":"listening on ')) return true;
    await delay(PROBE_INTERVAL_MS);
  }
  return false;
}

/** Complete lines from byte `offset` on; a line still being written is left for the next read. */
async function readLines(file: string, offset: number): Promise<string[]> {
  const handle = await open(file, "r");
  try {
    const { size } = await handle.stat();
    const length = Math.max(0, size - offset);
    const { buffer, bytesRead } = await handle.read(Buffer.alloc(length), 0, length, offset);
    const text = buffer.subarray(0, bytesRead).toString("utf8");
    return text
      .slice(0, text.lastIndexOf("\n") + 1)
      .split("\n")
      .filter((line) => line !== "");
  } finally {
    await handle.close();
  }
}

/** Parses one JSON log line; returns a BlobGet for a completed, successful blob GET. */
export function parseBlobGet(line: string): BlobGet | undefined {
  let entry: unknown;
  try {
    entry = JSON.parse(line);
  } catch (cause) {
    debugLog(`docker-registry: unparsable log line (${describeError(cause)}): ${line.slice(0, 200)}`);
    return undefined;
  }
  if (typeof entry !== "object" || entry === null) return undefined;
  const field = (name: string): unknown => (entry as Record<string, unknown>)[name];
  const msg = field("msg");
  const uri = field("http.request.uri");
  const status = field("http.response.status");
  const written = field("http.response.written");
  if (typeof msg !== "string" || !msg.startsWith("response completed")) return undefined;
  if (field("http.request.method") !== "GET" || typeof uri !== "string") return undefined;
  if (typeof status !== "number" || status < 200 || status > 299 || typeof written !== "number") return undefined;
  const match = BLOB_PATH.exec(uri);
  if (match === null) return undefined;
  const userAgent = field("http.request.useragent");
  return {
    repository: match[1] ?? "",
    digest: match[2] ?? "",
    status,
    bytes: written,
    uri,
    userAgent: typeof userAgent === "string" ? userAgent : "",
  };
}
