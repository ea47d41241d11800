// A Pod as the kubelet runs it, in Podman: a sandbox container owns the network namespace (and the
// pod IP, known before any container of the pod starts, as the Downward API needs it), init
// containers run to completion in order, then the containers start; all share the sandbox's network.
// hostPath volumes are bind mounts from a directory that stands for the node's filesystem; emptyDirs
// are directories of the pod. Stopping runs each container's preStop hook, then SIGTERM, then
// SIGKILL after terminationGracePeriodSeconds.
import { createWriteStream } from "node:fs";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { GenericContainer, type StartedTestContainer } from "testcontainers";
import { HarnessError } from "../support/errors.js";
import { probeHttpStatus } from "../support/http-probe.js";
import { debugLog, describeError, readTail } from "../support/process.js";
import type { PodNetwork } from "./network.js";
import {
  type ContainerSpec,
  type DownwardValues,
  type PodSpec,
  type ProjectionSpec,
  type ResolvedContainer,
  type ResolvedProbe,
  resolveContainer,
} from "./pod-spec.js";
import { containerState, dockerode } from "./runtime.js";

/** Init containers (chown, `shoal configure`) finish in about a second; more means they hang. */
const INIT_TIMEOUT_MS = 60_000;
/** Kubernetes' default when the spec has none. */
const DEFAULT_GRACE_SECONDS = 30;
const PROBE_INTERVAL_MS = 20;

/** A container of the pod that the chart does not render: test infrastructure in the pod's network. */
export interface Sidecar {
  readonly name: string;
  readonly image: string;
  readonly entrypoint: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly bindMounts?: readonly { readonly source: string; readonly target: string }[];
}

export interface PodOptions {
  readonly name: string;
  readonly namespace: string;
  readonly nodeName: string;
  readonly spec: PodSpec;
  readonly network: PodNetwork;
  /** The pod sandbox's image: any image with catatonit (the tools image). */
  readonly sandboxImage: string;
  /** The node's filesystem root on the host: hostPath volumes live under it. */
  readonly nodeRoot: string;
  /** Where the pod's own files go (emptyDirs, container logs). */
  readonly podDir: string;
  readonly configMaps: ReadonlyMap<string, Readonly<Record<string, string>>>;
  /** What the kubelet adds to every container's environment (KUBERNETES_SERVICE_HOST/PORT). */
  readonly serviceEnv?: Readonly<Record<string, string>>;
  /** Directory mounted read-only at the service account path when the spec automounts its token. */
  readonly serviceAccountDir?: string;
  /** Names this pod resolves (the cluster DNS records it needs), as /etc/hosts entries of the sandbox. */
  readonly hosts?: readonly { readonly host: string; readonly ipAddress: string }[];
  readonly sidecars?: readonly Sidecar[];
  /** Containers of the spec not started (e.g. the agent, to time its start separately). */
  readonly deferContainers?: readonly string[];
  /**
   * The kubelet's TokenRequest for a projected serviceAccountToken source, once the sandbox has its IP
   * (the Pod must be in the API then: the token is bound to it).
   */
  readonly serviceAccountToken?: (
    pod: { readonly ip: string },
    request: { readonly audience: string; readonly expirationSeconds: number },
  ) => Promise<string>;
}

export interface StopResult {
  readonly exitCode: number;
  readonly milliseconds: number;
}

export const SERVICE_ACCOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount";

/** GenericContainer with the HostConfig fields a pod spec needs and testcontainers has no method for. */
class PodContainer extends GenericContainer {
  withReadOnlyRootFilesystem(): this {
    this.hostConfig.ReadonlyRootfs = true;
    return this;
  }

  withMemoryLimit(bytes: number): this {
    this.hostConfig.Memory = bytes;
    return this;
  }
}

export class Pod {
  readonly containers = new Map<string, StartedTestContainer>();
  readonly resolved = new Map<string, ResolvedContainer>();
  private readonly volumes = new Map<string, string>();
  /**
   * The containers' followed logs. Closed once the pod is removed: podman does not always end a follow
   * stream of a removed container, and one left open keeps the test process from exiting.
   */
  private readonly logStreams = new Set<Readable>();

  private constructor(
    readonly options: PodOptions,
    readonly sandbox: StartedTestContainer,
    readonly ip: string,
  ) {}

  /** Starts the sandbox, runs the init containers, starts the containers (but the deferred ones). */
  static async start(options: PodOptions): Promise<Pod> {
    await mkdir(join(options.podDir, "logs"), { recursive: true });
    const sandbox = new GenericContainer(options.sandboxImage)
      .withName(`${options.network.name}-${options.name}`)
      .withHostname(options.name)
      .withNetworkMode(options.network.name)
      .withCommand(["catatonit", "-P"])
      .withExtraHosts([...(options.hosts ?? [])]);
    const started = await sandbox.start();
    const pod = new Pod(options, started, started.getIpAddress(options.network.name));
    try {
      await pod.prepareVolumes();
      for (const init of options.spec.initContainers ?? []) await pod.runInit(init);
      for (const sidecar of options.sidecars ?? []) await pod.startSidecar(sidecar);
      for (const container of options.spec.containers)
        if (!(options.deferContainers ?? []).includes(container.name)) await pod.startContainer(container.name);
      return pod;
    } catch (error) {
      await pod.remove().catch(() => undefined);
      throw error;
    }
  }

  get downward(): DownwardValues {
    // One address per "node" here: the pod's network namespace is the node's (hostPort = containerPort).
    return {
      podName: this.options.name,
      namespace: this.options.namespace,
      podIP: this.ip,
      hostIP: this.ip,
      nodeName: this.options.nodeName,
    };
  }

  /** The chart's container spec as the kubelet resolves it for this pod. */
  resolve(spec: ContainerSpec): ResolvedContainer {
    return resolveContainer(spec, this.options.spec, this.downward, this.options.configMaps, this.options.serviceEnv);
  }

  container(name: string): StartedTestContainer {
    const container = this.containers.get(name);
    if (container === undefined)
      throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `pod ${this.options.name} has no running container ${name}`);
    return container;
  }

  /** Starts a container of the spec (again after a kill: the kubelet's restart, same spec, same volumes). */
  async startContainer(name: string): Promise<StartedTestContainer> {
    const spec = this.options.spec.containers.find((c) => c.name === name);
    if (spec === undefined) throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `pod spec has no container ${name}`);
    const previous = this.containers.get(name);
    if (previous !== undefined) await (await dockerode()).getContainer(previous.getId()).remove({ force: true });
    const resolved = this.resolve(spec);
    const started = await this.build(resolved, name).start();
    this.containers.set(name, started);
    this.resolved.set(name, resolved);
    return started;
  }

  /** GET on the probe's path and port at the pod IP, as the kubelet probes; true on 2xx/3xx. */
  async probe(container: string, kind: "startup" | "readiness" | "liveness"): Promise<boolean> {
    const probe = this.probeOf(container, kind);
    const status = await probeHttpStatus(`http://${this.ip}:${probe.port}${probe.path}`, probe.timeoutSeconds * 1000);
    return status !== undefined && status >= 200 && status < 400;
  }

  /** Milliseconds from now until the probe passes; throws after `timeoutMs` (or when the container exits). */
  async waitProbe(container: string, kind: "startup" | "readiness" | "liveness", timeoutMs: number): Promise<number> {
    const started = performance.now();
    const id = this.container(container).getId();
    for (;;) {
      if (await this.probe(container, kind)) return performance.now() - started;
      const state = await containerState(id);
      if (!state.running)
        throw new HarnessError(
          "ERR_HARNESS_START",
          `container ${container} of ${this.options.name} exited (${state.exitCode}) before its ${kind} probe passed\n${await this.logTail(container)}`,
        );
      if (performance.now() - started > timeoutMs)
        throw new HarnessError(
          "ERR_HARNESS_TIMEOUT",
          `${kind} probe of ${container} in ${this.options.name} did not pass in ${timeoutMs} ms\n${await this.logTail(container)}`,
        );
      await new Promise((resolve) => setTimeout(resolve, PROBE_INTERVAL_MS));
    }
  }

  probeOf(container: string, kind: "startup" | "readiness" | "liveness"): ResolvedProbe {
    const resolved = this.resolved.get(container);
    const probe = kind === "startup" ? resolved?.startupProbe : kind === "readiness" ? resolved?.readinessProbe : resolved?.livenessProbe;
    if (probe === undefined) throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `container ${container} has no ${kind} probe`);
    return probe;
  }

  /** Stops one container as the kubelet does: preStop hook, SIGTERM, SIGKILL after the grace period. */
  async stopContainer(name: string): Promise<StopResult> {
    const container = this.container(name);
    const started = performance.now();
    const grace = this.options.spec.terminationGracePeriodSeconds ?? DEFAULT_GRACE_SECONDS;
    const preStop = this.resolved.get(name)?.preStop;
    if (preStop !== undefined) {
      const result = await container.exec([...preStop]);
      debugLog(`containers: preStop of ${name} in ${this.options.name} exited ${result.exitCode}: ${result.output.trim().slice(-500)}`);
      if (result.exitCode !== 0)
        throw new HarnessError(
          "ERR_HARNESS_COMMAND",
          `preStop hook of ${name} in ${this.options.name} exited ${result.exitCode}:\n${result.output}`,
        );
    }
    const remaining = Math.max(1, Math.ceil(grace - (performance.now() - started) / 1000));
    await (await dockerode()).getContainer(container.getId()).stop({ t: remaining });
    const state = await containerState(container.getId());
    return { exitCode: state.exitCode, milliseconds: performance.now() - started };
  }

  /** Stops every container at once (as the kubelet on pod deletion); results by container name. */
  async stop(): Promise<Map<string, StopResult>> {
    const names = [...this.containers.keys()].filter((n) => this.options.spec.containers.some((c) => c.name === n));
    const results = await Promise.all(names.map(async (name) => [name, await this.stopContainer(name)] as const));
    return new Map(results);
  }

  /** SIGKILL, as a crash: the sandbox (and so the pod IP and open sockets' peers) stays. */
  async kill(name: string): Promise<void> {
    await (await dockerode()).getContainer(this.container(name).getId()).kill({ signal: "SIGKILL" });
  }

  async logTail(name: string): Promise<string> {
    return `--- ${name} log\n${await readTail(join(this.options.podDir, "logs", `${name}.log`))}`;
  }

  /** Removes every container of the pod and its sandbox (force: also running ones). */
  async remove(): Promise<void> {
    const api = await dockerode();
    const ids = [...this.containers.values()].map((c) => c.getId());
    await Promise.all(
      ids.map((id) =>
        api
          .getContainer(id)
          .remove({ force: true })
          .catch((error: unknown) => {
            debugLog(`containers: remove ${id}: ${describeError(error)}`);
          }),
      ),
    );
    try {
      await api.getContainer(this.sandbox.getId()).remove({ force: true });
    } finally {
      for (const stream of this.logStreams) stream.destroy();
    }
  }

  private async prepareVolumes(): Promise<void> {
    for (const volume of this.options.spec.volumes ?? []) {
      if (volume.hostPath !== undefined) {
        const dir = join(this.options.nodeRoot, volume.hostPath.path);
        if (volume.hostPath.type !== "DirectoryOrCreate" && volume.hostPath.type !== "Directory")
          throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `hostPath type ${volume.hostPath.type ?? "(none)"} is not modelled`);
        // The kubelet creates DirectoryOrCreate paths 0755 root:root.
        await mkdir(dir, { recursive: true, mode: 0o755 });
        this.volumes.set(volume.name, dir);
      } else if (volume.projected !== undefined) {
        const dir = join(this.options.podDir, "volumes", "projected", volume.name);
        await mkdir(dir, { recursive: true });
        for (const source of volume.projected.sources) await this.project(dir, source);
        // The kubelet writes projected files 0644 (defaultMode), readable by any uid in the pod.
        await chmod(dir, 0o755);
        this.volumes.set(volume.name, dir);
      } else if (volume.emptyDir !== undefined) {
        const dir = join(this.options.podDir, "volumes", "empty-dir", volume.name);
        await mkdir(dir, { recursive: true });
        // The kubelet's emptyDir is world-writable, so any uid in the pod can use it.
        await chmod(dir, 0o777);
        this.volumes.set(volume.name, dir);
      } else {
        throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `volume ${volume.name}: only hostPath, emptyDir and projected are modelled`);
      }
    }
  }

  /** One source of a projected volume: a bound ServiceAccount token, or keys of a rendered ConfigMap. */
  private async project(dir: string, source: ProjectionSpec): Promise<void> {
    if (source.serviceAccountToken !== undefined) {
      const { audience, expirationSeconds, path } = source.serviceAccountToken;
      if (this.options.serviceAccountToken === undefined || audience === undefined)
        throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", "a serviceAccountToken projection needs an audience and a token source");
      const token = await this.options.serviceAccountToken({ ip: this.ip }, { audience, expirationSeconds: expirationSeconds ?? 3600 });
      await writeFile(join(dir, path), token, { mode: 0o644 });
    } else if (source.configMap !== undefined) {
      const data = this.options.configMaps.get(source.configMap.name);
      if (data === undefined) throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `ConfigMap ${source.configMap.name} was not rendered`);
      for (const item of source.configMap.items ?? Object.keys(data).map((key) => ({ key, path: key }))) {
        const value = data[item.key];
        if (value === undefined)
          throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `ConfigMap ${source.configMap.name} has no key ${item.key}`);
        await writeFile(join(dir, item.path), value, { mode: 0o644 });
      }
    } else {
      throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", "only serviceAccountToken and configMap projections are modelled");
    }
  }

  private build(resolved: ResolvedContainer, logName: string): PodContainer {
    let container = new PodContainer(resolved.image)
      .withName(`${this.options.network.name}-${this.options.name}-${logName}`)
      .withNetworkMode(`container:${this.sandbox.getId()}`)
      .withEnvironment({ ...resolved.env })
      .withLogConsumer((stream) => {
        this.keepLog(logName, stream);
      });
    if (resolved.entrypoint !== undefined) container = container.withEntrypoint([...resolved.entrypoint]);
    if (resolved.cmd !== undefined) container = container.withCommand([...resolved.cmd]);
    if (resolved.user !== undefined) container = container.withUser(resolved.user);
    if (resolved.readOnlyRootFilesystem) container = container.withReadOnlyRootFilesystem();
    if (resolved.noNewPrivileges) container = container.withSecurityOpt("no-new-privileges");
    if (resolved.capDrop.length > 0) container = container.withDroppedCapabilities(...resolved.capDrop);
    if (resolved.capAdd.length > 0) container = container.withAddedCapabilities(...resolved.capAdd);
    if (resolved.memoryLimitBytes !== undefined) container = container.withMemoryLimit(resolved.memoryLimitBytes);
    const mounts = resolved.mounts.map((m) => {
      const source = this.volumes.get(m.volume);
      if (source === undefined)
        throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `container ${resolved.name} mounts undeclared volume ${m.volume}`);
      return { source, target: m.target, mode: m.readOnly ? ("ro" as const) : ("rw" as const) };
    });
    // Kubernetes mounts the service account token unless the pod spec says otherwise.
    if (this.options.spec.automountServiceAccountToken !== false && this.options.serviceAccountDir !== undefined)
      mounts.push({ source: this.options.serviceAccountDir, target: SERVICE_ACCOUNT_PATH, mode: "ro" });
    return container.withBindMounts(mounts);
  }

  private async runInit(spec: ContainerSpec): Promise<void> {
    const resolved = this.resolve(spec);
    const started = await this.build(resolved, spec.name).start();
    this.containers.set(spec.name, started);
    this.resolved.set(spec.name, resolved);
    const api = await dockerode();
    const timeout = setTimeout(() => {
      void api
        .getContainer(started.getId())
        .kill({ signal: "SIGKILL" })
        .catch(() => undefined);
    }, INIT_TIMEOUT_MS);
    try {
      const result = await waitForExit(api.getContainer(started.getId()));
      if (result.StatusCode !== 0)
        throw new HarnessError(
          "ERR_HARNESS_START",
          `init container ${spec.name} of ${this.options.name} exited ${result.StatusCode}\n${await this.logTail(spec.name)}`,
        );
    } finally {
      clearTimeout(timeout);
    }
  }

  private async startSidecar(sidecar: Sidecar): Promise<void> {
    let container = new GenericContainer(sidecar.image)
      .withName(`${this.options.network.name}-${this.options.name}-${sidecar.name}`)
      .withNetworkMode(`container:${this.sandbox.getId()}`)
      .withEntrypoint([...sidecar.entrypoint])
      .withEnvironment({ ...sidecar.env })
      .withLogConsumer((stream) => {
        this.keepLog(sidecar.name, stream);
      });
    if (sidecar.bindMounts !== undefined)
      container = container.withBindMounts(sidecar.bindMounts.map((m) => ({ ...m, mode: "ro" as const })));
    this.containers.set(sidecar.name, await container.start());
  }

  private keepLog(name: string, stream: Readable): void {
    const file = createWriteStream(join(this.options.podDir, "logs", `${name}.log`), { flags: "a" });
    this.logStreams.add(stream);
    stream.once("close", () => this.logStreams.delete(stream));
    stream.on("error", () => file.end());
    stream.pipe(file);
  }
}

/** How often a wait that lost Podman's race with the exiting process is made again. */
const WAIT_RACE_RETRIES = 3;

/**
 * The container's exit, as `wait` reports it. Podman's `wait` on a container whose process exits while it
 * reads that process's cgroup fails with `read /proc/PID/cgroup: no such process` (a known Podman race,
 * seen with this harness's short-lived init containers); the container has exited by then, and the same
 * wait made again returns its status.
 */
export async function waitForExit(container: { wait(): Promise<unknown> }): Promise<{ StatusCode: number }> {
  for (let attempt = 1; ; attempt++) {
    try {
      return (await container.wait()) as { StatusCode: number };
    } catch (error) {
      const raced = error instanceof Error && /\/proc\/\d+\/cgroup/.test(error.message);
      if (!raced || attempt > WAIT_RACE_RETRIES) throw error;
    }
  }
}
