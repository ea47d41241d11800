import { CoreV1Api, type KubeConfig } from "@kubernetes/client-node";
import { apiStatusOf, toK8sError, withSignal } from "../k8s/index.js";
import { type BasicCredentials, parseDockerConfig } from "../registry/index.js";
import { PrefetchFailure } from "./errors.js";

const DOCKER_CONFIG_JSON = "kubernetes.io/dockerconfigjson";
const DOCKER_CFG = "kubernetes.io/dockercfg";

/**
 * Reads the pull secrets an ImagePrefetch names: only those names, only in its own namespace, one `get`
 * each (never list or watch, so the controller needs no access to any other Secret). Missing, forbidden
 * and malformed Secrets are PrefetchFailures naming the Secret and what to do.
 */
export class PullSecretReader {
  private readonly api: CoreV1Api;

  constructor(
    kubeConfig: KubeConfig,
    /** How the chart names the role to bind, for the message when reading is forbidden. */
    private readonly grantHint: string,
  ) {
    this.api = kubeConfig.makeApiClient(CoreV1Api);
  }

  /** Registry host → credentials from every named Secret; the first Secret naming a registry wins, as with the kubelet. */
  async read(namespace: string, names: readonly string[], signal: AbortSignal): Promise<Map<string, BasicCredentials>> {
    const result = new Map<string, BasicCredentials>();
    for (const name of names) {
      let secret;
      try {
        secret = await this.api.readNamespacedSecret({ namespace, name }, withSignal(signal));
      } catch (error: unknown) {
        signal.throwIfAborted();
        const status = apiStatusOf(error)?.code;
        if (status === 404)
          throw new PrefetchFailure("PullSecretNotFound", `Secret ${namespace}/${name} named in spec.pullSecrets does not exist`, {
            cause: error,
          });
        if (status === 403) {
          throw new PrefetchFailure("PullSecretForbidden", `the controller may not read Secret ${namespace}/${name}: ${this.grantHint}`, {
            cause: error,
          });
        }
        throw new PrefetchFailure(
          "PullSecretNotFound",
          `Secret ${namespace}/${name} could not be read: ${toK8sError(error, "get secret").message}`,
          { cause: error },
        );
      }
      const field = secret.type === DOCKER_CONFIG_JSON ? ".dockerconfigjson" : secret.type === DOCKER_CFG ? ".dockercfg" : undefined;
      if (field === undefined)
        throw new PrefetchFailure(
          "PullSecretInvalid",
          `Secret ${namespace}/${name} has type ${secret.type ?? "(none)"}; a pull secret is ${DOCKER_CONFIG_JSON}`,
        );
      const encoded = secret.data?.[field];
      if (encoded === undefined) throw new PrefetchFailure("PullSecretInvalid", `Secret ${namespace}/${name} has no ${field} key`);
      const text = Buffer.from(encoded, "base64").toString("utf8");
      let parsed: Map<string, BasicCredentials>;
      try {
        // The legacy .dockercfg format is the "auths" object itself.
        parsed = parseDockerConfig(field === ".dockercfg" ? `{"auths":${text}}` : text, `Secret ${namespace}/${name}`);
      } catch (error: unknown) {
        throw new PrefetchFailure("PullSecretInvalid", error instanceof Error ? error.message : String(error), { cause: error });
      }
      for (const [registry, credentials] of parsed) if (!result.has(registry)) result.set(registry, credentials);
    }
    return result;
  }
}
