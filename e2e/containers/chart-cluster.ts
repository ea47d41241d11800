// The Helm chart, rendered by helm, run in containers of the built image: the agent DaemonSet's pod on
// each "node", the controller Deployment's replicas, with the rendered args, env, ConfigMaps, probes,
// users, read-only roots, capabilities, volumes and memory limits (pod.ts / pod-spec.ts). Around them
// what a cluster provides: the API server (the repository's double behind TLS, kube-api.ts), the
// tracker Service (a kube-proxy per agent pod, kube-proxy.ts), cluster DNS for the Service name, the
// kubelet's Downward API values and Pod status in the API, and an origin registry container.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type K8sObject, NAMESPACE, at, only, render } from "../../charts/shoal/tests/render.js";
import { HarnessError } from "../support/errors.js";
import { metricValue } from "../support/metrics-text.js";
import { debugLog, describeError } from "../support/process.js";
import { SHOAL_IMAGE, SHOAL_REPOSITORY, TOOLS_IMAGE } from "./images.js";
import { KubeApiEndpoint } from "./kube-api.js";
import { PodNetwork } from "./network.js";
import { OriginRegistry } from "./origin-registry.js";
import { Pod, type Sidecar } from "./pod.js";
import type { PodSpec } from "./pod-spec.js";

export const ORIGIN_NAME = "origin.shoal.test";
/** The kube-proxy script, compiled next to this file, mounted into each agent pod. */
const KUBE_PROXY_SCRIPT = fileURLToPath(new URL("./kube-proxy.js", import.meta.url));
const CONTROLLER_READY_TIMEOUT_MS = 60_000;
const SKOPEO_TIMEOUT_S = 180;

export interface ChartClusterOptions {
  /** Agent pods, one per node. */
  readonly nodes: number;
  /** Chart values on top of the harness's (image, registries); helm validates them with values.schema.json. */
  readonly values?: Record<string, unknown>;
  /** Host directory for node roots, pod files and TLS material. */
  readonly work: string;
  /** Give each node a containerd config.toml with config_path set, for `shoal configure` to find. */
  readonly containerdConfig?: boolean;
  /** Start the agent pods without their agent container (the test starts it, e.g. to time it). */
  readonly deferAgents?: boolean;
}

export interface AgentNode {
  readonly nodeName: string;
  readonly nodeRoot: string;
  readonly pod: Pod;
}

export interface PullOutcome {
  readonly node: string;
  /** Digest of the manifest skopeo wrote, after every blob file matched its name's digest. */
  readonly digest: string | undefined;
  readonly error: string | undefined;
  readonly seconds: number;
}

/** Objects of one kind from the rendered chart, typed for the harness. */
function podTemplate(object: K8sObject): { spec: PodSpec; labels: Record<string, string> } {
  return {
    spec: at(object, "spec", "template", "spec") as PodSpec,
    labels: at(object, "spec", "template", "metadata", "labels") as Record<string, string>,
  };
}

function configMaps(objects: readonly K8sObject[]): Map<string, Record<string, string>> {
  const maps = new Map<string, Record<string, string>>();
  for (const object of objects)
    if (object.kind === "ConfigMap") maps.set(object.metadata.name, (object.data ?? {}) as Record<string, string>);
  return maps;
}

export class ChartCluster {
  readonly controllers: Pod[] = [];
  readonly agents: AgentNode[] = [];

  private constructor(
    readonly options: ChartClusterOptions,
    readonly objects: readonly K8sObject[],
    readonly network: PodNetwork,
    readonly api: KubeApiEndpoint,
    readonly origin: OriginRegistry,
  ) {}

  static async render(values: Record<string, unknown> = {}): Promise<K8sObject[]> {
    return render({
      ...values,
      image: { repository: SHOAL_REPOSITORY, pullPolicy: "Never" },
      registries: [`${ORIGIN_NAME}:5000=http://${ORIGIN_NAME}:5000`],
    });
  }

  static async start(options: ChartClusterOptions): Promise<ChartCluster> {
    const objects = await ChartCluster.render(options.values);
    const network = await PodNetwork.create("shoal-e2e");
    let api: KubeApiEndpoint | undefined;
    let origin: OriginRegistry | undefined;
    try {
      // The origin first: netavark creates the bridge (and the gateway address the API listens on)
      // with the network's first container.
      origin = await OriginRegistry.start(network, TOOLS_IMAGE, ORIGIN_NAME);
      api = await KubeApiEndpoint.start(network.gateway, NAMESPACE, join(options.work, "kube-api"));
      // The chart's CA Secret (helm renders it; the API server would store it).
      for (const secret of objects.filter((o) => o.kind === "Secret")) {
        const data = Object.fromEntries(
          Object.entries((secret.data ?? {}) as Record<string, string>).map(([key, value]) => [key, Buffer.from(value, "base64")]),
        );
        api.double.putSecret({
          namespace: NAMESPACE,
          name: secret.metadata.name,
          type: typeof secret.type === "string" ? secret.type : "Opaque",
          data,
        });
      }
      const cluster = new ChartCluster(options, objects, network, api, origin);
      try {
        await cluster.startControllers();
        for (let i = 0; i < options.nodes; i++) cluster.agents.push(await cluster.startAgentPod(i));
        return cluster;
      } catch (error) {
        await cluster.destroy();
        throw error;
      }
    } catch (error) {
      await origin?.stop().catch(() => undefined);
      await api?.close().catch(() => undefined);
      await network.remove().catch(() => undefined);
      throw error;
    }
  }

  get daemonSet(): K8sObject {
    return only(this.objects, "DaemonSet");
  }

  get deployment(): K8sObject {
    return only(this.objects, "Deployment");
  }

  /** The tracker Service's cluster DNS name and port, as the agents' --tracker names it. */
  get trackerService(): { host: string; port: number } {
    const service = only(this.objects, "Service", "-tracker");
    const port = (at(service, "spec", "ports") as { port: number }[])[0]?.port;
    assert.ok(port !== undefined, "the tracker Service has a port");
    return { host: `${service.metadata.name}.${NAMESPACE}.svc.cluster.local`, port };
  }

  /** The controller replicas whose readiness probe passes now (every synced replica, leader or not). */
  async readyControllers(): Promise<Pod[]> {
    const ready = await Promise.all(this.controllers.map((c) => c.probe("controller", "readiness")));
    return this.controllers.filter((_, i) => ready[i]);
  }

  /** The holder of the controllers' Lease (the chart names it after the Deployment), "" when none. */
  leaseHolder(): string {
    const lease = this.api.double.object("leases", NAMESPACE, this.deployment.metadata.name);
    const holder = (lease?.spec as { holderIdentity?: unknown } | undefined)?.holderIdentity;
    return typeof holder === "string" ? holder : "";
  }

  /** The replica that holds the Lease and is Ready (other than `except`). */
  async waitLeader(timeoutMs = CONTROLLER_READY_TIMEOUT_MS, except?: Pod): Promise<Pod> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const holder = this.leaseHolder();
      const ready = (await this.readyControllers()).filter((c) => c !== except && c.options.name === holder);
      if (ready.length === 1 && ready[0] !== undefined) return ready[0];
      if (Date.now() > deadline)
        throw new HarnessError(
          "ERR_HARNESS_TIMEOUT",
          `no ready controller holding the Lease after ${timeoutMs} ms (holder ${JSON.stringify(holder)})\n${(await Promise.all(this.controllers.map((c) => c.logTail("controller")))).join("\n")}`,
        );
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  /** Starts the agent container of a node's pod (deferred or killed before) and marks the Pod ready once its probe passes. */
  async startAgent(node: AgentNode, readyTimeoutMs: number): Promise<{ startMs: number; readyMs: number }> {
    const started = performance.now();
    this.api.double.setPodReady(NAMESPACE, node.pod.options.name, false);
    await node.pod.startContainer("agent");
    const startMs = performance.now() - started;
    await node.pod.waitProbe("agent", "readiness", readyTimeoutMs);
    const readyMs = performance.now() - started;
    this.api.double.setPodReady(NAMESPACE, node.pod.options.name, true);
    return { startMs, readyMs };
  }

  async agentMetric(node: AgentNode, name: string, labels: Record<string, string> = {}): Promise<number> {
    const port = node.pod.resolved.get("agent")?.ports.get("metrics");
    const response = await fetch(`http://${node.pod.ip}:${port}/metrics`, { signal: AbortSignal.timeout(5_000) });
    return metricValue(await response.text(), name, labels);
  }

  /**
   * Pulls `repo:tag` from the origin through the node's agent with skopeo in the node's network
   * namespace (the node's container runtime), into a scratch dir that is checked and removed:
   * every blob file must hash to its name. Never throws for a failed pull; reports it.
   */
  async pull(node: AgentNode, mirror: string, repo: string, tag: string): Promise<PullOutcome> {
    const started = performance.now();
    const dir = `/tmp/pull-${randomBytes(4).toString("hex")}`;
    const source = `docker://${mirror}/${this.origin.name}_5000/${repo}:${tag}`;
    const script = [
      "set -e",
      `skopeo --insecure-policy --command-timeout ${SKOPEO_TIMEOUT_S}s copy --quiet --preserve-digests --src-tls-verify=false --retry-times 0 "$1" "dir:$2"`,
      'cd "$2"',
      "ls | grep -E '^[0-9a-f]{64}$' | while read -r f; do echo \"$f  $f\"; done | sha256sum --check --quiet --strict",
      "sha256sum manifest.json",
      'cd / && rm -rf "$2"',
    ].join("\n");
    try {
      const result = await node.pod.sandbox.exec(["sh", "-c", script, "pull", source, dir]);
      const seconds = (performance.now() - started) / 1000;
      if (result.exitCode !== 0)
        return { node: node.nodeName, digest: undefined, error: `exit ${result.exitCode}: ${result.output.trim().slice(-1500)}`, seconds };
      const hex = /^([0-9a-f]{64})\s+manifest\.json$/m.exec(result.stdout)?.[1];
      return {
        node: node.nodeName,
        digest: hex === undefined ? undefined : `sha256:${hex}`,
        error: hex === undefined ? `no manifest digest in: ${result.output}` : undefined,
        seconds,
      };
    } catch (error) {
      return { node: node.nodeName, digest: undefined, error: describeError(error), seconds: (performance.now() - started) / 1000 };
    }
  }

  /** The agent's mirror on loopback of its node (survives the node's network being cut). */
  loopbackMirror(node: AgentNode): string {
    return `127.0.0.1:${node.pod.resolved.get("agent")?.ports.get("mirror") ?? 0}`;
  }

  async destroy(): Promise<void> {
    for (const pod of [...this.agents.map((a) => a.pod), ...this.controllers])
      await pod.remove().catch((error: unknown) => {
        debugLog(`containers: remove pod: ${describeError(error)}`);
      });
    await this.origin.stop().catch(() => undefined);
    await this.api.close().catch(() => undefined);
    await this.network.remove().catch((error: unknown) => {
      debugLog(`containers: remove network: ${describeError(error)}`);
    });
  }

  private async startControllers(): Promise<void> {
    const { spec } = podTemplate(this.deployment);
    const replicas = at(this.deployment, "spec", "replicas") as number;
    const hash = randomBytes(5).toString("hex").slice(0, 9);
    for (let i = 0; i < replicas; i++) {
      const name = `${this.deployment.metadata.name}-${hash}-${randomBytes(3).toString("hex").slice(0, 5)}`;
      const pod = await Pod.start({
        name,
        namespace: NAMESPACE,
        nodeName: `node-${i}`,
        spec,
        network: this.network,
        sandboxImage: TOOLS_IMAGE,
        nodeRoot: join(this.options.work, "nodes", `node-${i}`, "root"),
        podDir: join(this.options.work, "pods", name),
        configMaps: configMaps(this.objects),
        serviceEnv: this.api.serviceEnv,
        serviceAccountDir: this.api.serviceAccountDir,
      });
      this.controllers.push(pod);
    }
    await this.waitLeader();
  }

  private async startAgentPod(index: number): Promise<AgentNode> {
    const { spec, labels } = podTemplate(this.daemonSet);
    const nodeName = `node-${index}`;
    const name = `${this.daemonSet.metadata.name}-${randomBytes(3).toString("hex").slice(0, 5)}`;
    const nodeRoot = join(this.options.work, "nodes", nodeName, "root");
    if (this.options.containerdConfig === true) {
      await mkdir(join(nodeRoot, "etc", "containerd"), { recursive: true });
      await writeFile(
        join(nodeRoot, "etc", "containerd", "config.toml"),
        ["version = 2", '[plugins."io.containerd.grpc.v1.cri".registry]', '  config_path = "/etc/containerd/certs.d"', ""].join("\n"),
      );
    }
    const tracker = this.trackerService;
    const controllerPorts = (name: string): number => {
      const port = this.controllers[0]?.resolved.get("controller")?.ports.get(name);
      assert.ok(port !== undefined, `the controller container has a ${name} port`);
      return port;
    };
    const issuerPort = (at(only(this.objects, "Service", "-tracker"), "spec", "ports") as { name: string; port: number }[]).find(
      (p) => p.name === "issuer",
    )?.port;
    assert.ok(issuerPort !== undefined, "the tracker Service has an issuer port");
    const kubeProxy: Sidecar = {
      name: "kube-proxy",
      image: SHOAL_IMAGE,
      entrypoint: ["node", "/kube-proxy/kube-proxy.mjs"],
      env: {
        SHOAL_E2E_SERVICES: JSON.stringify([
          {
            listen: `127.0.0.1:${tracker.port}`,
            backends: this.controllers.map((c) => ({
              target: `${c.ip}:${controllerPorts("tracker")}`,
              readyUrl: `http://${c.ip}:${controllerPorts("metrics")}/readyz`,
            })),
          },
          {
            listen: `127.0.0.1:${issuerPort}`,
            backends: this.controllers.map((c) => ({
              target: `${c.ip}:${controllerPorts("issuer")}`,
              readyUrl: `http://${c.ip}:${controllerPorts("metrics")}/readyz`,
            })),
          },
        ]),
      },
      bindMounts: [{ source: KUBE_PROXY_SCRIPT, target: "/kube-proxy/kube-proxy.mjs" }],
    };
    this.api.double.putNode({ name: nodeName });
    const serviceAccount = spec.serviceAccountName ?? "default";
    const pod = await Pod.start({
      name,
      namespace: NAMESPACE,
      nodeName,
      spec,
      network: this.network,
      sandboxImage: TOOLS_IMAGE,
      nodeRoot,
      podDir: join(this.options.work, "pods", name),
      configMaps: configMaps(this.objects),
      serviceEnv: this.api.serviceEnv,
      serviceAccountDir: this.api.serviceAccountDir,
      // Cluster DNS: the tracker Service's name (kube-proxy listens there in the pod) and the origin's.
      hosts: [
        { host: tracker.host, ipAddress: "127.0.0.1" },
        { host: this.origin.name, ipAddress: this.origin.ip },
      ],
      sidecars: [kubeProxy],
      deferContainers: ["agent"],
      // The kubelet reports the pod IP once the sandbox is up, then asks for the projected token (bound to the Pod).
      serviceAccountToken: ({ ip }, request) => {
        this.api.double.putPod({ namespace: NAMESPACE, name, nodeName, ip, labels, ready: false, serviceAccount });
        return Promise.resolve(
          this.api.double.serviceAccountToken({
            namespace: NAMESPACE,
            serviceAccount,
            pod: name,
            audiences: [request.audience],
            expirationSeconds: request.expirationSeconds,
          }),
        );
      },
    });
    if (this.api.double.object("pods", NAMESPACE, name) === undefined)
      this.api.double.putPod({ namespace: NAMESPACE, name, nodeName, ip: pod.ip, labels, ready: false, serviceAccount });
    const node = { nodeName, nodeRoot, pod };
    if (this.options.deferAgents !== true) await this.startAgent(node, CONTROLLER_READY_TIMEOUT_MS);
    return node;
  }
}
