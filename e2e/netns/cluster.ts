// A Shoal cluster on a NetnsTopology: Debian's docker-registry as the origin, a controller in the
// control namespace, and per node namespace a `shoal agent` and a real containerd pulling through it.
// Every process is started with `ip netns exec` and stopped by its own PID.
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ThrowawayPki, type WorkloadIdentity, tlsArgs } from "../../pkg/identity/index.js";
import type { GeneratedImageLayout } from "../../pkg/imagegen/index.js";
import { CRI_NAMESPACE, Containerd } from "../support/containerd.js";
import { DockerRegistry } from "../support/docker-registry.js";
import { HarnessError } from "../support/errors.js";
import { debugLog, describeError, makeTempDir, removeTempDir } from "../support/process.js";
import { ShoalAgent } from "../support/shoal-agent.js";
import { ShoalController } from "../support/shoal-controller.js";
import { skopeoPushLayout } from "../support/skopeo.js";
import { killAndWaitSync, registerEmergencyCleanup, removeDirSync } from "./emergency-cleanup.js";
import { configureRegistryMirror } from "./runtime-config.js";
import { type Endpoint, NetnsTopology, type TopologyOptions } from "./topology.js";

/** Port of the origin and of the pull-through cache inside their namespaces. */
export const REGISTRY_PORT = 5000;
const CONTROLLER_PORT = 7070;

/** A running controller, however it was started (static membership now, Kubernetes mode later). */
export interface ControllerHandle {
  /** HOST:PORT the agents connect to. */
  readonly trackerAddress: string;
  readonly pid: number;
  /** SIGKILL, as a crash or a node loss. */
  kill(): Promise<void>;
  stop(): Promise<void>;
}

export interface ControllerLaunchContext {
  readonly endpoint: Endpoint;
  /** Addresses of the node namespaces, where agents connect from. */
  readonly nodeAddresses: readonly string[];
  readonly nodeNames: readonly string[];
  /** The agents' --upstream list (the origin), for controllers that resolve images (ImagePrefetch). */
  readonly upstreams: readonly string[];
  /** For logs and state; removed with the cluster. */
  readonly dir: string;
  /** --tls-cert/--tls-key/--tls-ca of the controller's certificate, or --allow-insecure without TLS. */
  readonly tlsArgs: readonly string[];
  /** With TLS: the CA's certificate and key as its Secret holds them (a Kubernetes controller signs with it). */
  readonly caSecretData: { "tls.crt": string; "tls.key": string } | undefined;
  /** --grant-stall-timeout (ClusterOptions.grantStallTimeout). */
  readonly grantStallTimeout: string | null | undefined;
}

export type ControllerLauncher = (context: ControllerLaunchContext) => Promise<ControllerHandle>;

/**
 * `shoal controller --membership static`: with TLS, `--allowed-peers <node names>` (matched against
 * the agents' certificates); without, `<node addresses>` (matched against the connections).
 */
export const staticMembershipController: ControllerLauncher = async (context) => {
  const allowed = context.tlsArgs.includes("--allow-insecure") ? context.nodeAddresses : context.nodeNames;
  const controller = await ShoalController.start({
    netns: context.endpoint.netns,
    host: context.endpoint.address,
    port: CONTROLLER_PORT,
    extraArgs: ["--membership", "static", "--allowed-peers", allowed.join(","), ...context.tlsArgs],
    parentDir: context.dir,
    grantStallTimeout: context.grantStallTimeout,
  });
  return {
    trackerAddress: controller.trackerAddress,
    pid: controller.daemon.pid,
    kill: () => controller.kill(),
    stop: () => controller.stop(),
  };
};

export interface ClusterOptions extends TopologyOptions {
  /** Start the controller and an agent per node right away; default true. */
  readonly shoal?: boolean;
  /** Start a containerd per node right away; default true. */
  readonly containerd?: boolean;
  /** The containerds load the CRI plugin, for pulls as the kubelet makes them (`pullRound`'s `cri`); default false. */
  readonly cri?: boolean;
  readonly controller?: ControllerLauncher;
  /** More `shoal agent` flags. */
  readonly agentArgs?: readonly string[];
  /**
   * Agents serve from their node's containerd content store (when the node's containerd runs before its
   * agent starts) and keep no copy of what containerd holds; default true, as in production.
   */
  readonly containerdContent?: boolean;
  /** Mutual TLS between agents and the controller, with a throwaway CA (certificate files); default true. */
  readonly tls?: boolean;
  /**
   * The controller's --grant-stall-timeout: default the test harness's short one (ShoalController); null
   * for the controller's own default, as installed (benchmarks: a busy machine must not move grants sooner
   * than it would in production).
   */
  readonly grantStallTimeout?: string | null;
}

export interface ClusterNode {
  readonly index: number;
  readonly endpoint: Endpoint;
  agent: ShoalAgent | undefined;
  containerd: Containerd | undefined;
}

export class NetnsCluster {
  origin: DockerRegistry | undefined;
  cache: DockerRegistry | undefined;
  controller: ControllerHandle | undefined;
  private pki: ThrowawayPki | undefined;
  private readonly unregister: () => void;
  private destroyed = false;

  private constructor(
    readonly topology: NetnsTopology,
    readonly runDir: string,
    readonly nodes: readonly ClusterNode[],
    private readonly options: ClusterOptions,
  ) {
    this.unregister = registerEmergencyCleanup({
      name: `processes and files of ${topology.prefix}*`,
      run: () => {
        killAndWaitSync(this.pids());
        removeDirSync(runDir);
      },
    });
  }

  static async start(options: ClusterOptions): Promise<NetnsCluster> {
    const topology = await NetnsTopology.create(options);
    let cluster: NetnsCluster | undefined;
    try {
      const runDir = await makeTempDir("netns");
      cluster = new NetnsCluster(
        topology,
        runDir,
        topology.nodes.map((endpoint, index) => ({ index, endpoint, agent: undefined, containerd: undefined })),
        options,
      );
      await cluster.startOrigin();
      // containerd first: an agent started after its node's containerd serves from its content store.
      if (options.containerd ?? true) await cluster.startContainerds();
      if (options.shoal ?? true) {
        await cluster.startController();
        await cluster.startAgents();
      }
      return cluster;
    } catch (error) {
      if (cluster !== undefined)
        await cluster.destroy().catch((e: unknown) => {
          debugLog(`netns: teardown after failed start: ${describeError(e)}`);
        });
      else await topology.destroy();
      throw error;
    }
  }

  /** `10.213.X.2:5000`: the origin as written in image references. */
  get originHost(): string {
    return `${this.topology.origin.address}:${REGISTRY_PORT}`;
  }

  get originUrl(): string {
    return `http://${this.originHost}`;
  }

  /** PIDs of every process this cluster runs now. */
  pids(): number[] {
    const pids = [this.origin?.pid, this.cache?.pid, this.controller?.pid];
    for (const node of this.nodes) pids.push(node.agent?.daemon.pid, node.containerd?.pid);
    return pids.filter((pid): pid is number => pid !== undefined);
  }

  async startOrigin(): Promise<DockerRegistry> {
    if (this.origin !== undefined) return this.origin;
    const { origin } = this.topology;
    this.origin = await DockerRegistry.start({
      netns: { name: origin.netns, host: origin.address, port: REGISTRY_PORT },
      parentDir: await this.dir("origin"),
    });
    return this.origin;
  }

  /** Stops the origin registry (SIGTERM, then SIGKILL); its address stays, so clients get refused. */
  async stopOrigin(): Promise<void> {
    const origin = this.origin;
    this.origin = undefined;
    await origin?.stop();
  }

  /** docker-registry in proxy mode (pull-through cache of the origin) in the cache namespace. */
  async startCache(): Promise<DockerRegistry> {
    if (this.cache !== undefined) return this.cache;
    const { cache } = this.topology;
    this.cache = await DockerRegistry.start({
      netns: { name: cache.netns, host: cache.address, port: REGISTRY_PORT },
      proxyRemoteUrl: this.originUrl,
      parentDir: await this.dir("cache"),
    });
    return this.cache;
  }

  async stopCache(): Promise<void> {
    const cache = this.cache;
    this.cache = undefined;
    await cache?.stop();
  }

  get cacheHost(): string {
    return `${this.topology.cache.address}:${REGISTRY_PORT}`;
  }

  /**
   * Pushes an OCI layout to the origin with skopeo run inside the origin's namespace (the registry
   * listens only there). Returns the reference `HOST:PORT/REPOSITORY:TAG`.
   */
  async pushImage(layout: GeneratedImageLayout, repository: string, signal?: AbortSignal): Promise<string> {
    const ref = `${this.originHost}/${repository}:${layout.tag}`;
    await skopeoPushLayout({ layoutDir: layout.dir, tag: layout.tag, destination: ref, netns: this.topology.origin.netns, signal });
    return ref;
  }

  async startController(): Promise<ControllerHandle> {
    if (this.controller !== undefined) return this.controller;
    const launch = this.options.controller ?? staticMembershipController;
    const control = this.topology.control;
    this.controller = await launch({
      endpoint: control,
      nodeAddresses: this.nodes.map((n) => n.endpoint.address),
      nodeNames: this.nodes.map((n) => n.endpoint.name),
      upstreams: [`${this.originHost}=${this.originUrl}`],
      dir: await this.dir("control"),
      tlsArgs: await this.tlsArgsFor({ role: "controller", name: "tracker", ips: [control.address] }),
      caSecretData: this.pki?.caSecretData(),
      grantStallTimeout: this.options.grantStallTimeout,
    });
    return this.controller;
  }

  async stopController(): Promise<void> {
    const controller = this.controller;
    this.controller = undefined;
    await controller?.stop();
  }

  /** SIGKILLs the controller. */
  async killController(): Promise<void> {
    const controller = this.controller;
    this.controller = undefined;
    await controller?.kill();
  }

  /** An agent per node (fresh stores), each pulling from the origin and peering through the controller. */
  async startAgents(): Promise<void> {
    const tracker = this.controller?.trackerAddress;
    await Promise.all(
      this.nodes.map(async (node) => {
        if (node.agent !== undefined) return;
        const dir = await this.dir(node.endpoint.name);
        node.agent = await ShoalAgent.start({
          netns: node.endpoint.netns,
          host: node.endpoint.address,
          tracker,
          nodeName: node.endpoint.name,
          upstreams: [`${this.originHost}=${this.originUrl}`],
          dataDir: await makeTempDir("agent-data", dir),
          parentDir: dir,
          extraArgs: [
            ...(await this.tlsArgsFor({ role: "agent", name: node.endpoint.name, ips: [node.endpoint.address] })),
            ...(this.options.agentArgs ?? []),
          ],
          containerd:
            node.containerd === undefined || this.options.containerdContent === false
              ? undefined
              : { socket: node.containerd.address, namespace: node.containerd.namespace, contentDir: node.containerd.contentDir },
        });
      }),
    );
  }

  /** Certificate flags for a process of this cluster (a CA made for the run), or --allow-insecure. */
  private async tlsArgsFor(identity: WorkloadIdentity): Promise<string[]> {
    if (this.options.tls === false) return ["--allow-insecure"];
    this.pki ??= await ThrowawayPki.create(join(this.runDir, "pki"), "shoal netns CA (throwaway)");
    return tlsArgs(await this.pki.issue(identity));
  }

  /** SIGKILLs a node's agent. */
  async killAgent(node: ClusterNode): Promise<void> {
    const agent = node.agent;
    node.agent = undefined;
    await agent?.kill();
  }

  async stopAgents(): Promise<void> {
    await Promise.all(
      this.nodes.map(async (node) => {
        const agent = node.agent;
        node.agent = undefined;
        await agent?.stop();
      }),
    );
  }

  /**
   * A fresh containerd per node that has none (own root, state and socket). `cri` (default: the cluster's
   * option): with the CRI plugin (the kubelet's pull path, `pullRound`'s `cri`), its images in the CRI
   * namespace.
   */
  async startContainerds(options: { readonly cri?: boolean } = {}): Promise<void> {
    const cri = options.cri ?? this.options.cri ?? false;
    await Promise.all(
      this.nodes.map(async (node) => {
        node.containerd ??= await Containerd.start({
          netns: node.endpoint.netns,
          parentDir: await this.dir(node.endpoint.name),
          ...(cri ? { cri, namespace: CRI_NAMESPACE } : {}),
        });
      }),
    );
  }

  async stopContainerd(node: ClusterNode): Promise<void> {
    const containerd = node.containerd;
    node.containerd = undefined;
    await containerd?.stop();
  }

  async stopContainerds(): Promise<void> {
    await Promise.all(this.nodes.map((node) => this.stopContainerd(node)));
  }

  /** Points the node's containerd at its own agent for the origin's images. */
  async useAgentMirror(node: ClusterNode): Promise<void> {
    if (node.containerd === undefined || node.agent === undefined) {
      throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `${node.endpoint.name} needs a containerd and an agent for the agent mirror`);
    }
    await configureRegistryMirror(node.containerd, this.originHost, this.originUrl, node.agent.mirrorUrl);
  }

  /**
   * The node's containerd pulls the origin's images from the origin itself, over plain HTTP: a direct pull
   * on the CRI path, which has no `--plain-http`. The `[host]` entry is needed: with the `server` line
   * alone, containerd 1.6's CRI plugin spoke HTTPS to this non-loopback origin (with a mirror's `[host]`
   * entry before it, as `shoal configure` writes, it falls back to an `http://` server over HTTP).
   */
  async useOriginDirect(node: ClusterNode): Promise<void> {
    if (node.containerd === undefined) throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `${node.endpoint.name} has no containerd`);
    const dir = join(node.containerd.hostsDir, this.originHost);
    await mkdir(dir, { recursive: true });
    const url = JSON.stringify(this.originUrl);
    await writeFile(
      join(dir, "hosts.toml"),
      `# The origin itself, over plain HTTP, and no mirror (the benchmark's direct arm).\nserver = ${url}\n\n[host.${url}]\n  capabilities = ["pull", "resolve"]\n`,
    );
  }

  /** Points the node's containerd at the pull-through cache for the origin's images. */
  async useCacheMirror(node: ClusterNode): Promise<void> {
    if (node.containerd === undefined) throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `${node.endpoint.name} has no containerd`);
    await configureRegistryMirror(node.containerd, this.originHost, this.originUrl, `http://${this.cacheHost}`);
  }

  /** Bytes the origin's interface has sent (kernel counter, read inside its namespace). */
  async originTxBytes(signal?: AbortSignal): Promise<number> {
    return this.topology.counter(this.topology.origin, "tx_bytes", signal);
  }

  /** Stops every process by PID, deletes every namespace, removes the files. Idempotent. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    const failures: string[] = [];
    const attempt = async (what: string, step: () => Promise<void>): Promise<void> => {
      try {
        await step();
      } catch (error) {
        failures.push(`${what}: ${describeError(error)}`);
      }
    };
    await Promise.all(this.nodes.map((node) => attempt(`containerd of ${node.endpoint.name}`, () => this.stopContainerd(node))));
    await attempt("agents", () => this.stopAgents());
    await attempt("controller", () => this.stopController());
    await attempt("cache", () => this.stopCache());
    await attempt("origin", () => this.stopOrigin());
    await attempt("namespaces", () => this.topology.destroy());
    await attempt("files", () => removeTempDir(this.runDir));
    this.unregister();
    if (failures.length > 0) throw new HarnessError("ERR_HARNESS_STOP", `netns cluster teardown: ${failures.join("; ")}`);
  }

  private async dir(name: string): Promise<string> {
    const dir = join(this.runDir, name);
    await mkdir(dir, { recursive: true });
    return dir;
  }
}
