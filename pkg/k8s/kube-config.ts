import { KubeConfig } from "@kubernetes/client-node";
import { K8sError } from "./errors.js";

/** Where the API server and credentials come from. */
export type KubeConfigSource =
  /** A kubeconfig file (its current context). */
  | { readonly file: string }
  /** The Pod's service account: KUBERNETES_SERVICE_HOST/PORT, token and CA under /var/run/secrets. */
  | { readonly inCluster: true }
  /** Where kubectl looks: $KUBECONFIG, ~/.kube/config, else the in-cluster service account. */
  | { readonly defaultLocations: true };

/** Loads a KubeConfig; throws K8sError ERR_K8S_CONFIG with the reason when it is unusable. */
export function loadKubeConfig(source: KubeConfigSource): KubeConfig {
  const from =
    "file" in source
      ? `kubeconfig ${source.file}`
      : "defaultLocations" in source
        ? "the default kubeconfig ($KUBECONFIG, ~/.kube/config)"
        : "in-cluster configuration";
  const config = new KubeConfig();
  try {
    if ("file" in source) config.loadFromFile(source.file);
    else if ("defaultLocations" in source) config.loadFromDefault();
    else config.loadFromCluster();
  } catch (error: unknown) {
    throw new K8sError("ERR_K8S_CONFIG", `cannot load ${from}: ${error instanceof Error ? error.message : String(error)}`, {
      cause: error,
    });
  }
  const cluster = config.getCurrentCluster();
  if (cluster === null || cluster.server === "") {
    throw new K8sError("ERR_K8S_CONFIG", `${from} names no API server (current context ${JSON.stringify(config.getCurrentContext())})`);
  }
  return config;
}
