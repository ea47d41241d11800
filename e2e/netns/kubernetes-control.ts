// The controller in Kubernetes mode on a NetnsCluster: the Kubernetes API double runs in the test process
// and serves a Unix socket too; a forwarder in the control namespace gives the controller a TCP address
// for it. The double holds a Node per node namespace (with its zone label) and an agent Pod whose pod IP is
// the node's address, so the real membership admits the agents and ranks them by zone.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { KubeApiDouble } from "../../pkg/k8s/testing/index.js";
import { ShoalController } from "../support/shoal-controller.js";
import { UnixForwarder } from "../support/unix-forwarder.js";
import { waitUntil } from "../support/process.js";
import type { ControllerLauncher } from "./cluster.js";

/** Namespace of the agent Pods and the Lease in the double. */
export const AGENT_NAMESPACE = "shoal";
export const CONTROLLER_IDENTITY = "ctl-0";
/** The CA Secret's name (the controller's --ca-secret default). */
const CA_SECRET = "shoal-ca";
const CONTROLLER_PORT = 7070;
/** The forwarder's port on the control namespace's loopback. */
const API_PORT = 6443;
const LEADER_TIMEOUT_MS = 20_000;

export class KubernetesControl {
  private constructor(
    readonly api: KubeApiDouble,
    private readonly socketPath: string,
  ) {}

  /** The double, serving on 127.0.0.1 (for this process) and on `dir`/api.sock (for the namespaces). */
  static async start(dir: string): Promise<KubernetesControl> {
    const socketPath = join(dir, "kube-api.sock");
    return new KubernetesControl(await KubeApiDouble.start({ socketPath, bookmarkIntervalMs: 5_000 }), socketPath);
  }

  /**
   * `shoal controller --membership kubernetes` in the control namespace, with ImagePrefetch on and the
   * agents' upstreams; returns once it holds the Lease (agents then find a serving tracker at once).
   */
  launcher(zoneOf: (nodeName: string, index: number) => string): ControllerLauncher {
    return async (context) => {
      // Kubernetes membership always speaks mutual TLS: the controller signs its own certificate with the
      // cluster's CA (the agents' certificate files come from the same throwaway CA).
      if (context.caSecretData === undefined)
        throw new Error("the Kubernetes controller needs the cluster's TLS (NetnsCluster option tls: true)");
      this.api.putSecret({ namespace: AGENT_NAMESPACE, name: CA_SECRET, type: "kubernetes.io/tls", data: context.caSecretData });
      for (const [index, nodeName] of context.nodeNames.entries()) {
        this.api.putNode({ name: nodeName, zone: zoneOf(nodeName, index) });
        this.api.putPod({ namespace: AGENT_NAMESPACE, name: `agent-${nodeName}`, nodeName, ip: context.nodeAddresses[index] ?? "" });
      }
      const forwarder = await UnixForwarder.start({
        netns: context.endpoint.netns,
        host: "127.0.0.1",
        port: API_PORT,
        socketPath: this.socketPath,
        parentDir: context.dir,
      });
      let controller: ShoalController;
      try {
        const kubeconfig = join(context.dir, "kubeconfig");
        await writeFile(kubeconfig, this.api.kubeconfigYamlFor(forwarder.url));
        controller = await ShoalController.start({
          netns: context.endpoint.netns,
          host: context.endpoint.address,
          port: CONTROLLER_PORT,
          extraArgs: [
            ...[
              "--membership",
              "kubernetes",
              "--kubeconfig",
              kubeconfig,
              "--namespace",
              AGENT_NAMESPACE,
              "--identity",
              CONTROLLER_IDENTITY,
            ],
            ...["--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "1s"],
            ...context.upstreams.flatMap((u) => ["--upstream", u]),
          ],
          parentDir: context.dir,
        });
      } catch (error) {
        await forwarder.stop();
        throw error;
      }
      try {
        await waitUntil(
          async () =>
            Promise.resolve(
              (this.api.object("leases", AGENT_NAMESPACE, "shoal-controller")?.spec as { holderIdentity?: string } | undefined)
                ?.holderIdentity === CONTROLLER_IDENTITY,
            ),
          {
            timeoutMs: LEADER_TIMEOUT_MS,
            what: "the controller to lead",
          },
        );
      } catch (error) {
        await controller.stop();
        await forwarder.stop();
        throw error;
      }
      return {
        trackerAddress: controller.trackerAddress,
        pid: controller.daemon.pid,
        kill: async () => {
          await controller.kill();
          await forwarder.stop();
        },
        stop: async () => {
          await controller.stop();
          await forwarder.stop();
        },
      };
    };
  }

  async close(): Promise<void> {
    await this.api.close();
  }
}
