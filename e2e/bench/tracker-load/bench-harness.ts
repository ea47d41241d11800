// What the tracker benchmarks share: load-generator processes, the API double with K agent Pods, and
// waiting for a controller to be Ready.
import { fork } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { KubeApiDouble } from "../../../pkg/k8s/testing/index.js";
import { CertificateAuthority } from "../../../pkg/identity/index.js";
import type { BenchCa, WorkerCommand, WorkerReport } from "./protocol.js";
import { agentAddress, agentIdentity } from "./workload.js";

const WORKER = join(dirname(fileURLToPath(import.meta.url)), "load-worker.js");
/** How long the Kubernetes controller may take to sync K Pods and win the Lease. */
const LEADER_TIMEOUT_MS = 120_000;
export const NAMESPACE = "shoal";
const CA_SECRET = "shoal-ca";
const CA_LIFETIME_MS = 24 * 3_600_000;

/** A load-generator process and the next report it sends. */
export class Worker {
  private readonly child;
  private waiting: ((report: WorkerReport) => void) | undefined;

  constructor() {
    this.child = fork(WORKER, [], { stdio: ["ignore", "inherit", "inherit", "ipc"], serialization: "advanced" });
    this.child.on("message", (report: WorkerReport) => {
      this.waiting?.(report);
    });
  }

  request(command: WorkerCommand, timeoutMs: number): Promise<WorkerReport> {
    return new Promise<WorkerReport>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`load worker ${this.child.pid ?? "?"} did not answer ${command.type} within ${timeoutMs} ms`));
      }, timeoutMs);
      const onExit = (): void => {
        clearTimeout(timer);
        reject(new Error(`load worker ${this.child.pid ?? "?"} exited during ${command.type}`));
      };
      this.child.once("exit", onExit);
      this.waiting = (report) => {
        clearTimeout(timer);
        this.child.off("exit", onExit);
        if (report.type === "failed") reject(new Error(`load worker: ${report.message}`));
        else resolve(report);
      };
      this.child.send(command);
    });
  }

  /** A command that gets no answer. */
  notify(command: WorkerCommand): void {
    this.child.send(command);
  }

  stop(): void {
    if (this.child.exitCode === null) this.child.kill("SIGKILL");
  }
}

export function quantile(sorted: readonly number[], q: number): number {
  return sorted.length === 0 ? Number.NaN : (sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? Number.NaN);
}

/**
 * The API double with K agent Pods on K Nodes and the cluster CA in its Secret (the controller issues
 * itself a certificate from it and speaks mutual TLS; the load generator's agents get theirs from `ca`);
 * `extraArgs` for a controller replica named `identity`.
 */
export async function startKubernetes(
  agents: number,
  workDir: string,
  identity = "bench-controller",
): Promise<{ api: KubeApiDouble; extraArgs: string[]; ca: BenchCa }> {
  const api = await KubeApiDouble.start();
  const { certificatePem, keyPem } = CertificateAuthority.createSelfSigned({
    commonName: "shoal bench CA (throwaway)",
    lifetimeMs: CA_LIFETIME_MS,
  });
  api.putSecret({
    namespace: NAMESPACE,
    name: CA_SECRET,
    type: "kubernetes.io/tls",
    data: { "tls.crt": certificatePem, "tls.key": keyPem },
  });
  for (let i = 0; i < agents; i++) {
    const { nodeName, zone } = agentIdentity(i);
    api.putNode({ name: nodeName, zone });
    api.putPod({ namespace: NAMESPACE, name: `shoal-agent-${i}`, nodeName, ip: agentAddress(i) });
  }
  const kubeconfig = join(workDir, "kubeconfig");
  await writeFile(kubeconfig, api.kubeconfigYaml());
  return {
    api,
    ca: { certificatePem, keyPem },
    extraArgs: [
      "--ca-secret",
      CA_SECRET,
      "--issuer-listen",
      "127.0.0.1:0",
      "--membership",
      "kubernetes",
      "--kubeconfig",
      kubeconfig,
      "--namespace",
      NAMESPACE,
      "--identity",
      identity,
      "--agent-selector",
      "app.kubernetes.io/name=shoal,app.kubernetes.io/component=agent",
    ],
  };
}

export async function waitReady(metricsUrl: string): Promise<void> {
  const deadline = Date.now() + LEADER_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const ok = await fetch(`${metricsUrl}/readyz`, { signal: AbortSignal.timeout(2_000) }).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`the controller was not ready within ${LEADER_TIMEOUT_MS} ms`);
}

/** The Lease the replicas elect a leader with (the controller's default name). */
export const LEASE_NAME = "shoal-controller";

/** Who holds the Lease in the API double. */
export function leaseHolder(api: KubeApiDouble): string | undefined {
  return (api.object("leases", NAMESPACE, LEASE_NAME)?.spec as { holderIdentity?: string } | undefined)?.holderIdentity;
}

/** Waits until `identity` holds the Lease: every replica is Ready once it has its certificate, only the leader serves. */
export async function waitLeader(api: KubeApiDouble, identity: string): Promise<void> {
  const deadline = Date.now() + LEADER_TIMEOUT_MS;
  while (leaseHolder(api) !== identity) {
    if (Date.now() >= deadline)
      throw new Error(`${identity} did not lead within ${LEADER_TIMEOUT_MS} ms (the Lease names ${String(leaseHolder(api))})`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
