import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import type { KubeConfig } from "@kubernetes/client-node";
import { ConfigError } from "../../pkg/config/index.js";
import { loadKubeConfig } from "../../pkg/k8s/index.js";
import type { ControllerOptions } from "./options.js";

/** Where a Pod finds its own namespace (the service account volume). */
export const SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/** What --membership kubernetes needs beyond the flags: the API connection and the defaults taken from the Pod. */
export interface KubernetesSettings {
  readonly kubeConfig: KubeConfig;
  readonly namespace: string;
  readonly identity: string;
}

/**
 * Resolves the kubeconfig (--kubeconfig, else in-cluster), the namespace (--namespace, else the Pod's
 * own from the service account) and the identity (--identity, else the host name, which is the pod
 * name). Throws ConfigError naming the flag when something is missing.
 */
export function resolveKubernetesSettings(
  options: ControllerOptions,
  env: Readonly<Record<string, string | undefined>>,
  readNamespaceFile: () => string = () => readFileSync(SERVICE_ACCOUNT_NAMESPACE_FILE, "utf8"),
): KubernetesSettings {
  const inCluster = options.kubeconfig === undefined;
  if (inCluster && (env.KUBERNETES_SERVICE_HOST ?? "") === "") {
    throw new ConfigError(
      "ERR_CONFIG_INVALID_VALUE",
      "--membership kubernetes needs --kubeconfig (SHOAL_KUBECONFIG) outside a cluster: KUBERNETES_SERVICE_HOST is not set, so there is no in-cluster configuration",
    );
  }
  let kubeConfig: KubeConfig;
  try {
    kubeConfig = options.kubeconfig === undefined ? loadKubeConfig({ inCluster: true }) : loadKubeConfig({ file: options.kubeconfig });
  } catch (error: unknown) {
    const flag = inCluster ? "in-cluster configuration (no --kubeconfig)" : "--kubeconfig (SHOAL_KUBECONFIG)";
    throw new ConfigError("ERR_CONFIG_INVALID_VALUE", `${flag}: ${error instanceof Error ? error.message : String(error)}`, {
      cause: error,
    });
  }
  let namespace = options.namespace;
  if (namespace === undefined) {
    if (!inCluster)
      throw new ConfigError(
        "ERR_CONFIG_INVALID_VALUE",
        "--namespace (SHOAL_NAMESPACE) is required with --kubeconfig: only in a cluster is the Pod's own namespace the default",
      );
    try {
      namespace = readNamespaceFile().trim();
    } catch (error: unknown) {
      throw new ConfigError(
        "ERR_CONFIG_INVALID_VALUE",
        `--namespace (SHOAL_NAMESPACE) not set and the Pod's namespace cannot be read from ${SERVICE_ACCOUNT_NAMESPACE_FILE}`,
        { cause: error },
      );
    }
    if (namespace === "")
      throw new ConfigError(
        "ERR_CONFIG_INVALID_VALUE",
        `--namespace (SHOAL_NAMESPACE) not set and ${SERVICE_ACCOUNT_NAMESPACE_FILE} is empty`,
      );
  }
  return { kubeConfig, namespace, identity: options.identity ?? hostname() };
}
