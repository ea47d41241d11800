import { AuthenticationV1Api, type KubeConfig, V1TokenReview, V1TokenReviewSpec, type V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { IdentityError, type WorkloadAuthenticator, type WorkloadIdentity, normalizeAddress } from "../identity/index.js";
import { type Informer, model, toK8sError, withSignal } from "../k8s/index.js";

/** The keys TokenReview puts the Pod of a bound (projected) token under. */
const POD_NAME_KEY = "authentication.kubernetes.io/pod-name";
const POD_UID_KEY = "authentication.kubernetes.io/pod-uid";

export interface TokenAuthenticatorOptions {
  readonly kubeConfig: KubeConfig;
  /** The agent Pods (the membership's informer): a token must name one of them. */
  readonly pods: Informer<V1Pod>;
  /** The namespace agents run in. */
  readonly namespace: string;
  /** The audience agents' projected tokens are for; tokens for any other audience are refused. */
  readonly audience: string;
  readonly logger: Logger;
  /** A refused request whose token named a Pod (for a Warning Event on it). */
  readonly onRefused?: (pod: V1Pod | undefined, message: string) => void;
}

/**
 * Who an agent is, from Kubernetes: its projected ServiceAccount token goes to the TokenReview API
 * (for the controller's audience only, so a token meant for anything else is refused), whose answer
 * names the Pod the token is bound to. That Pod must be a running agent Pod (the membership's informer:
 * namespace and selector), with the token's uid and ServiceAccount, and the request must come from one
 * of its IPs. The certificate then names the Pod's node, the Pod and its IPs; nothing the agent says
 * about itself goes into it.
 */
export class TokenAuthenticator implements WorkloadAuthenticator {
  private readonly api: AuthenticationV1Api;

  constructor(private readonly options: TokenAuthenticatorOptions) {
    this.api = options.kubeConfig.makeApiClient(AuthenticationV1Api);
  }

  async authenticate(
    request: { readonly token: string; readonly remoteAddress: string | undefined },
    signal: AbortSignal,
  ): Promise<WorkloadIdentity> {
    const { namespace, pods } = this.options;
    if (!pods.hasSynced) throw new IdentityError("ERR_IDENTITY_UNAVAILABLE", "the controller has not loaded the agent Pods yet");
    let review: V1TokenReview;
    try {
      review = await this.api.createTokenReview(
        {
          body: model(V1TokenReview, {
            apiVersion: "authentication.k8s.io/v1",
            kind: "TokenReview",
            spec: model(V1TokenReviewSpec, { token: request.token, audiences: [this.options.audience] }),
          }),
        },
        withSignal(signal),
      );
    } catch (error: unknown) {
      throw new IdentityError("ERR_IDENTITY_UNAVAILABLE", `TokenReview failed: ${toK8sError(error, "create tokenreview").message}`, {
        cause: error,
      });
    }
    const status = review.status;
    if (status?.authenticated !== true) {
      throw this.refuse(undefined, `the token was not accepted: ${status?.error ?? "not authenticated"}`, "token_invalid");
    }
    const username = status.user?.username ?? "";
    const podName = status.user?.extra?.[POD_NAME_KEY]?.[0];
    const podUid = status.user?.extra?.[POD_UID_KEY]?.[0];
    if (podName === undefined || podUid === undefined)
      throw this.refuse(
        undefined,
        `the token of ${username} is not bound to a Pod (a projected ServiceAccount token is needed)`,
        "token_invalid",
      );
    const account = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(username);
    if (account?.[1] !== namespace)
      throw this.refuse(undefined, `the token is for ${username}, not a ServiceAccount in namespace ${namespace}`, "pod_mismatch");
    const pod = pods.get(`${namespace}/${podName}`);
    if (pod === undefined)
      throw this.refuse(
        undefined,
        `the token names Pod ${namespace}/${podName}, which is no agent Pod the controller knows`,
        "pod_unknown",
      );
    const refuse = (message: string): IdentityError =>
      this.refuse(pod, `the token names Pod ${namespace}/${podName}, ${message}`, "pod_mismatch");
    if (pod.metadata?.uid !== podUid) throw refuse(`but that Pod's uid is ${pod.metadata?.uid ?? "unknown"}, not the token's ${podUid}`);
    if ((pod.spec?.serviceAccountName ?? "default") !== account[2])
      throw refuse(`whose ServiceAccount is ${pod.spec?.serviceAccountName ?? "default"}, not ${account[2] ?? ""}`);
    if (pod.metadata.deletionTimestamp !== undefined || pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed")
      throw refuse("which is terminating or finished");
    const ips = podIps(pod);
    const from = request.remoteAddress === undefined ? undefined : normalizeAddress(request.remoteAddress);
    if (from === undefined || !ips.includes(from))
      throw refuse(`whose IPs are ${ips.join(", ") || "none yet"}, but the request comes from ${from ?? "an unknown address"}`);
    const nodeName = pod.spec?.nodeName ?? "";
    if (nodeName === "") throw refuse("which is not scheduled to a node");
    return { role: "agent", name: nodeName, pod: { namespace, name: podName }, ips };
  }

  private refuse(pod: V1Pod | undefined, message: string, refusal: "token_invalid" | "pod_unknown" | "pod_mismatch"): IdentityError {
    this.options.onRefused?.(pod, message);
    return new IdentityError("ERR_IDENTITY_REFUSED", message, { refusal });
  }
}

function podIps(pod: V1Pod): string[] {
  const ips = new Set<string>();
  if (pod.status?.podIP !== undefined && pod.status.podIP !== "") ips.add(normalizeAddress(pod.status.podIP));
  for (const entry of pod.status?.podIPs ?? []) if (entry.ip !== "") ips.add(normalizeAddress(entry.ip));
  return [...ips];
}
