import { access, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { HarnessError } from "./errors.js";
import { DaemonProcess, debugLog, describeError, inNetns, makeTempDir, removeTempDir, runCommand, type CommandResult } from "./process.js";
import { renderHostsToml } from "../../pkg/runtime/index.js";
import { criPullImage } from "./cri-client.js";

export const CONTAINERD_BINARY = "containerd";
export const CTR_BINARY = "ctr";
export const CONTAINERD_START_TIMEOUT_MS = 20_000;
/** Pulls of benchmark images go through here; the e2e images are a few MB. */
export const CTR_PULL_TIMEOUT_MS = 300_000;
export const CTR_TIMEOUT_MS = 30_000;
const READY_PROBE_TIMEOUT_MS = 2_000;
const READY_PROBE_INTERVAL_MS = 100;
const UMOUNT_TIMEOUT_MS = 10_000;
export const DEFAULT_NAMESPACE = "default";
/** The namespace the CRI plugin keeps the kubelet's images in. */
export const CRI_NAMESPACE = "k8s.io";

/**
 * Snapshotters that cannot work here (no aufs module, no btrfs/zfs file system, devmapper
 * unconfigured). Disabling them only silences their start-up warnings.
 */
const UNUSABLE_PLUGINS = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
];
const CRI_PLUGIN = "io.containerd.grpc.v1.cri";

export interface ContainerdOptions {
  /**
   * Load the CRI plugin (the kubelet's pull path) with `registry.config_path` = `hostsDir`.
   * Off by default: ctr pulls need only the content store and a snapshotter.
   */
  readonly cri?: boolean;
  /** containerd namespace for every ctr call; default "default" (ctr's own default). */
  readonly namespace?: string;
  readonly binary?: string;
  readonly startTimeoutMs?: number;
  /**
   * Run containerd and every ctr call inside this network namespace (`ip netns exec`): ctr fetches
   * from registries itself, so it must see the namespace's network too. Default: the caller's.
   */
  readonly netns?: string;
  /** Where the temp dir is created; default the system temp dir. */
  readonly parentDir?: string;
}

export interface PullOptions {
  /** Directory of `<registry-host>/hosts.toml` files; default this daemon's `hostsDir`. */
  readonly hostsDir?: string;
  /** `--plain-http`: talk HTTP to the registry named in the reference. */
  readonly plainHttp?: boolean;
  /** e.g. "linux/arm64"; default the host's platform. */
  readonly platform?: string;
  readonly allPlatforms?: boolean;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface ContainerdImage {
  readonly ref: string;
  readonly mediaType: string;
  readonly digest: string;
  /** As ctr prints it, e.g. "4.0 MiB". */
  readonly size: string;
  readonly platforms: readonly string[];
}

/**
 * containerd 1.6 as a plain background process with its own root, state, sockets and config in a
 * temp dir. Clients reach it through `ctr -a <address>`.
 */
export class Containerd {
  private constructor(
    readonly tempDir: string,
    private daemon: DaemonProcess,
    readonly namespace: string,
    readonly netns: string | undefined,
    /** Started with the CRI plugin: criPull works. */
    readonly cri: boolean,
  ) {}

  static async start(options: ContainerdOptions = {}): Promise<Containerd> {
    const tempDir = await makeTempDir("containerd", options.parentDir);
    let daemon: DaemonProcess | undefined;
    try {
      const paths = layoutOf(tempDir);
      await mkdir(paths.hostsDir, { recursive: true });
      await writeFile(paths.config, containerdConfig(tempDir, options.cri ?? false));
      daemon = await DaemonProcess.spawn({
        name: "containerd",
        ...inNetns(options.netns, options.binary ?? CONTAINERD_BINARY, ["--config", paths.config]),
        stdoutFile: paths.log,
        stderrFile: paths.log,
      });
      const containerd = new Containerd(tempDir, daemon, options.namespace ?? DEFAULT_NAMESPACE, options.netns, options.cri ?? false);
      await containerd.waitReady(options.startTimeoutMs ?? CONTAINERD_START_TIMEOUT_MS);
      debugLog(`containerd ready at ${paths.address} (${tempDir})`);
      return containerd;
    } catch (error) {
      const tail = daemon === undefined ? "" : `\n${await daemon.logTail()}`;
      await daemon?.stop();
      await unmountUnder(tempDir);
      await removeTempDir(tempDir);
      throw new HarnessError("ERR_HARNESS_START", `containerd did not start: ${describeError(error)}${tail}`, { cause: error });
    }
  }

  get pid(): number {
    return this.daemon.pid;
  }

  /** gRPC socket, for `ctr -a` and CRI clients. */
  get address(): string {
    return layoutOf(this.tempDir).address;
  }

  /** Default hosts dir (`config_path`): put `<registry-host>/hosts.toml` files here. */
  get hostsDir(): string {
    return layoutOf(this.tempDir).hostsDir;
  }

  get logFile(): string {
    return layoutOf(this.tempDir).log;
  }

  /** The content store's directory (`blobs/<alg>/<hex>`), what an agent may read directly. */
  get contentDir(): string {
    return join(this.tempDir, "root", "io.containerd.content.v1.content");
  }

  /** Stops containerd (SIGTERM, by PID) and starts it again on the same root, state and socket. */
  async restart(options: { startTimeoutMs?: number } = {}): Promise<void> {
    await this.daemon.stop();
    const paths = layoutOf(this.tempDir);
    this.daemon = await DaemonProcess.spawn({
      name: "containerd",
      ...inNetns(this.netns, CONTAINERD_BINARY, ["--config", paths.config]),
      stdoutFile: paths.log,
      stderrFile: paths.log,
    });
    await this.waitReady(options.startTimeoutMs ?? CONTAINERD_START_TIMEOUT_MS);
  }

  /** `ctr images import --index-name NAME TAR`: an image that reached the node without any registry. */
  async importImage(tarFile: string, name: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.ctr(["images", "import", "--index-name", name, tarFile], { timeoutMs: CTR_PULL_TIMEOUT_MS, signal: options.signal });
  }

  /** Digests of the namespace's content (`ctr content ls -q`). */
  async contentDigests(options: { signal?: AbortSignal } = {}): Promise<string[]> {
    const { stdout } = await this.ctr(["content", "ls", "-q"], options);
    return stdout
      .split("\n")
      .map((line) => line.trim())
      .filter((line) => line !== "");
  }

  /** Runs `ctr -a <address> -n <namespace> ARGS`; the error quotes ctr's output and the daemon log. */
  async ctr(args: readonly string[], options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<CommandResult> {
    const global = ["--address", this.address, "--namespace", this.namespace, "--connect-timeout", "5s"];
    try {
      const { command, args: commandArgs } = inNetns(this.netns, CTR_BINARY, [...global, ...args]);
      return await runCommand(command, commandArgs, { timeoutMs: options.timeoutMs ?? CTR_TIMEOUT_MS, signal: options.signal });
    } catch (error) {
      if (!(error instanceof HarnessError)) throw error;
      throw new HarnessError(error.code, `${error.message}\n--- containerd log\n${await this.daemon.logTail()}`, { cause: error });
    }
  }

  /** `ctr images pull --hosts-dir DIR [--plain-http] REF`: resolves through hosts.toml mirrors and unpacks. */
  async pull(ref: string, options: PullOptions = {}): Promise<CommandResult> {
    const args = ["images", "pull", "--hosts-dir", options.hostsDir ?? this.hostsDir];
    if (options.plainHttp === true) args.push("--plain-http");
    if (options.platform !== undefined) args.push("--platform", options.platform);
    if (options.allPlatforms === true) args.push("--all-platforms");
    args.push(ref);
    return this.ctr(args, { timeoutMs: options.timeoutMs ?? CTR_PULL_TIMEOUT_MS, signal: options.signal });
  }

  /**
   * The kubelet's pull: CRI PullImage, so the daemon itself fetches (through the hosts dir's mirrors),
   * verifies and unpacks, where `pull` has ctr fetch and stream every byte to the daemon. The image lands
   * in the CRI namespace (start with `cri: true` and `namespace: CRI_NAMESPACE` to list it). Plain HTTP to
   * a registry is a `server = "http://…"` in its hosts.toml. Returns the image id.
   */
  async criPull(ref: string, options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<string> {
    if (!this.cri) throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", "criPull needs a containerd started with cri: true");
    try {
      return await criPullImage(this.address, ref, options.timeoutMs ?? CTR_PULL_TIMEOUT_MS, options.signal);
    } catch (error) {
      throw new HarnessError("ERR_HARNESS_COMMAND", `${describeError(error)}\n--- containerd log\n${await this.daemon.logTail()}`, {
        cause: error,
      });
    }
  }

  /** `ctr images rm --sync`: also waits for garbage collection, so the content is really gone. */
  async removeImage(ref: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    await this.ctr(["images", "rm", "--sync", ref], options);
  }

  async listImages(options: { signal?: AbortSignal } = {}): Promise<ContainerdImage[]> {
    const { stdout } = await this.ctr(["images", "ls"], options);
    return parseImageList(stdout);
  }

  /** Stops containerd by PID, unmounts anything left under its dirs, removes them. Idempotent. */
  async stop(): Promise<void> {
    try {
      await this.daemon.stop();
    } finally {
      await unmountUnder(this.tempDir);
      await removeTempDir(this.tempDir);
    }
  }

  private async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastError: unknown;
    while (Date.now() < deadline) {
      if (this.daemon.exitStatus !== undefined) throw new Error(`containerd exited with code ${this.daemon.exitStatus.code}`);
      try {
        await access(this.address);
        await runCommand(CTR_BINARY, ["--address", this.address, "version"], { timeoutMs: READY_PROBE_TIMEOUT_MS });
        return;
      } catch (error) {
        lastError = error;
      }
      await new Promise((resolve) => setTimeout(resolve, READY_PROBE_INTERVAL_MS));
    }
    throw new Error(`not ready after ${timeoutMs} ms (last probe: ${describeError(lastError)})`);
  }
}

function layoutOf(tempDir: string): { config: string; log: string; address: string; hostsDir: string } {
  return {
    config: join(tempDir, "config.toml"),
    log: join(tempDir, "containerd.log"),
    address: join(tempDir, "containerd.sock"),
    hostsDir: join(tempDir, "certs.d"),
  };
}

/** TOML basic strings accept JSON string syntax. */
const q = (value: string): string => JSON.stringify(value);

function containerdConfig(tempDir: string, cri: boolean): string {
  const paths = layoutOf(tempDir);
  const disabled = cri ? UNUSABLE_PLUGINS : [...UNUSABLE_PLUGINS, CRI_PLUGIN];
  const lines = [
    "version = 2",
    `root = ${q(join(tempDir, "root"))}`,
    `state = ${q(join(tempDir, "state"))}`,
    `disabled_plugins = [${disabled.map(q).join(", ")}]`,
    "",
    "[grpc]",
    `  address = ${q(paths.address)}`,
    "[ttrpc]",
    `  address = ${q(`${paths.address}.ttrpc`)}`,
    // No debug or metrics listeners: nothing but the socket above.
    "[debug]",
    '  address = ""',
    '  level = "info"',
    "[metrics]",
    '  address = ""',
    "",
    // Its default is /opt/containerd, outside our temp dir.
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${q(join(tempDir, "opt"))}`,
  ];
  if (cri) {
    lines.push(`[plugins.${q(CRI_PLUGIN)}.registry]`, `  config_path = ${q(paths.hostsDir)}`);
  }
  return `${lines.join("\n")}\n`;
}

export interface HostsTomlOptions {
  /** The upstream, e.g. `http://127.0.0.1:5000`; containerd falls back to it when the mirror fails. */
  readonly server?: string;
  /** The agent's mirror URL (`http://HOST:PORT`); containerd appends `/v2/…?ns=<registry>`. */
  readonly mirror?: string;
}

/**
 * Writes `<hostsDir>/<registryHost>/hosts.toml` as `shoal configure` would (pkg/runtime's renderer), with
 * registryHost as in references, e.g. `127.0.0.1:5000` or `docker.io` (`_default` for all). Returns the path.
 */
export async function writeHostsToml(hostsDir: string, registryHost: string, options: HostsTomlOptions): Promise<string> {
  if (registryHost === "" || registryHost.includes("/") || registryHost.startsWith(".")) {
    throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `invalid registry host ${JSON.stringify(registryHost)}`);
  }
  const dir = join(hostsDir, registryHost);
  await mkdir(dir, { recursive: true });
  const file = join(dir, "hosts.toml");
  await writeFile(
    file,
    renderHostsToml({ registry: registryHost, ...(options.server === undefined ? {} : { server: options.server }) }, options.mirror),
  );
  return file;
}

/** Parses `ctr images ls`: REF TYPE DIGEST SIZE(2 words) PLATFORMS LABELS. */
export function parseImageList(output: string): ContainerdImage[] {
  return output
    .split("\n")
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields.length >= 6)
    .map(([ref = "", mediaType = "", digest = "", amount = "", unit = "", platforms = ""]) => ({
      ref,
      mediaType,
      digest,
      size: `${amount} ${unit}`,
      platforms: platforms === "-" ? [] : platforms.split(","),
    }));
}

/** Lazily unmounts everything mounted under `dir`, deepest first (e.g. snapshots of running tasks). */
async function unmountUnder(dir: string): Promise<void> {
  const mountinfo = await readFile("/proc/self/mountinfo", "utf8");
  const prefix = `${dir}/`;
  const points = mountinfo
    .split("\n")
    .map((line) => unescapeMountPath(line.split(" ")[4] ?? ""))
    .filter((point) => point.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
  for (const point of points) {
    try {
      await runCommand("umount", ["--lazy", point], { timeoutMs: UMOUNT_TIMEOUT_MS });
    } catch (error) {
      debugLog(`umount ${point}: ${describeError(error)}`);
    }
  }
}

/** mountinfo escapes space, tab, newline and backslash as \ooo octal. */
function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}
