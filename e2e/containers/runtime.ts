// The container runtime the suites drive: Podman's Docker-compatible API through testcontainers
// (DOCKER_HOST; see podman-service.sh). Whether it is there decides whether the suites run.
import { readFile } from "node:fs/promises";
import { getContainerRuntimeClient } from "testcontainers";
import { HarnessError } from "../support/errors.js";
import { describeError } from "../support/process.js";

/** testcontainers labels what it creates so; podman-service.sh stop (CI's exit trap) removes it all. */
export const CLEANUP_LABEL = "org.testcontainers";
/** Labels on everything this harness creates itself (networks): the same cleanup. */
export const HARNESS_LABELS: Readonly<Record<string, string>> = { [CLEANUP_LABEL]: "true", "org.shoal.e2e": "containers" };
const RUNTIME_PROBE_TIMEOUT_MS = 10_000;

/** The Docker API client testcontainers holds (dockerode), for what it does not wrap: pause, network connect. */
export type DockerApi = Awaited<ReturnType<typeof getContainerRuntimeClient>>["container"]["dockerode"];

/**
 * Why the container suites cannot run here, or false. They need Linux, root (rootful Podman: bridge
 * networks, bind mounts with any owner) and the API that DOCKER_HOST names.
 */
export async function containerSuiteUnavailable(): Promise<string | false> {
  if (process.platform !== "linux") return "the container suites need Linux (Podman)";
  if (process.getuid?.() !== 0) return "the container suites need root (rootful Podman)";
  if (process.env.DOCKER_HOST === undefined || process.env.DOCKER_HOST === "") {
    return 'DOCKER_HOST is not set: start Podman\'s API with `eval "$(e2e/containers/podman-service.sh start /tmp/shoal-podman)"` (see e2e/containers/README.md)';
  }
  try {
    const client = await Promise.race([
      getContainerRuntimeClient(),
      new Promise<never>((_, reject) =>
        setTimeout(() => {
          reject(new Error(`no answer in ${RUNTIME_PROBE_TIMEOUT_MS} ms`));
        }, RUNTIME_PROBE_TIMEOUT_MS).unref(),
      ),
    ]);
    await client.container.dockerode.ping();
    return false;
  } catch (error) {
    return `no container runtime at DOCKER_HOST=${process.env.DOCKER_HOST} (${describeError(error)}): start it with e2e/containers/podman-service.sh`;
  }
}

/** In CI the suites must run: a missing runtime fails them instead of skipping them. */
export function skipUnlessCi(reason: string | false): string | false {
  return process.env.CI === "true" ? false : reason;
}

/** Throws the reason (CI only reaches this with one; elsewhere the suite was skipped). */
export function assertAvailable(reason: string | false): void {
  if (reason !== false) throw new HarnessError("ERR_HARNESS_START", `the container suites must run in CI: ${reason}`);
}

export async function dockerode(): Promise<DockerApi> {
  return (await getContainerRuntimeClient()).container.dockerode;
}

export interface ContainerState {
  readonly status: string;
  readonly running: boolean;
  readonly exitCode: number;
  readonly pid: number;
  readonly oomKilled: boolean;
}

export async function containerState(id: string): Promise<ContainerState> {
  const info = await (await dockerode()).getContainer(id).inspect();
  return {
    status: info.State.Status,
    running: info.State.Running,
    exitCode: info.State.ExitCode,
    pid: info.State.Pid,
    oomKilled: info.State.OOMKilled,
  };
}

/** Bytes through an interface of a container's network namespace (kernel counters, read from the host). */
export interface InterfaceCounters {
  readonly rxBytes: number;
  readonly txBytes: number;
}

/** /proc/PID/net/dev of a process in the namespace, e.g. a container's main process. */
export async function interfaceCounters(pid: number, iface = "eth0"): Promise<InterfaceCounters> {
  const text = await readFile(`/proc/${pid}/net/dev`, "utf8");
  for (const line of text.split("\n")) {
    const [name, rest] = line.split(":");
    if (name?.trim() !== iface || rest === undefined) continue;
    const fields = rest.trim().split(/\s+/).map(Number);
    // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit: bytes …
    return { rxBytes: fields[0] ?? 0, txBytes: fields[8] ?? 0 };
  }
  throw new HarnessError("ERR_HARNESS_INVALID_ARGUMENT", `no interface ${iface} in /proc/${pid}/net/dev`);
}
