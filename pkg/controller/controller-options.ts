import type { Logger } from "pino";
import type { KubeConfig } from "@kubernetes/client-node";
import { type WorkloadIdentity, identityUri } from "../identity/index.js";
import {
  type InformerTuning,
  type LeaderElectionTimings,
  LEASE_DURATION_MS,
  RENEW_DEADLINE_MS,
  RETRY_PERIOD_MS,
  parseLabelSelector,
  validateLeaderElectionTimings,
} from "../k8s/index.js";
import type { ControllerMetrics } from "../metrics/index.js";
import type { CertificateSettings } from "./controller-certificates.js";
import { ControllerError } from "./errors.js";
import type { PrefetchOptions } from "./prefetch-parts.js";

export interface KubernetesControllerOptions extends Partial<LeaderElectionTimings> {
  readonly kubeConfig: KubeConfig;
  /** Namespace of the agent Pods and of the Lease. */
  readonly namespace: string;
  /** Label selector of the agent Pods. */
  readonly agentSelector: string;
  readonly leaseName: string;
  /** This replica in the Lease and in Events (the pod name). */
  readonly identity: string;
  /** Where the tracker (gRPC) listens. */
  readonly listen: { readonly host: string; readonly port: number };
  /**
   * This replica's IP as agents reach it (the pod IP). While leading, `IP:tracker port` is written on the
   * Lease, and followers name it to agents that reach them through the Service. Default: the listen host
   * when it is an IP other than 0.0.0.0/::; without any, followers cannot redirect (agents retry).
   */
  readonly advertiseHost?: string;
  /** Between a follower's reads of the Lease (see LeaderElectorOptions.candidatePeriodMs). */
  readonly candidatePeriodMs?: number;
  /** On a graceful stop, how long the leader serves on waiting for a successor (default HANDOVER_TIMEOUT_MS). */
  readonly handoverTimeoutMs?: number;
  readonly grantStallTimeoutMs?: number;
  readonly metrics?: ControllerMetrics;
  readonly logger: Logger;
  /** Informer backoff and clocks (tests). */
  readonly informerTuning?: InformerTuning;
  /** Tracker keepalive (tests shorten it so a vanished agent is noticed sooner). */
  readonly trackerKeepaliveTimeMs?: number;
  readonly trackerKeepaliveTimeoutMs?: number;
  /** ImagePrefetch reconciling on the leader; off when absent. */
  readonly prefetch?: PrefetchOptions;
  readonly certificates: CertificateSettings;
}

/**
 * Checks what KubernetesController.start cannot work without (the agent selector, the Lease timings, the
 * namespace, an identity that can name a certificate); throws ERR_CONTROLLER_CONFIG naming the problem.
 * Returns the controller's workload identity.
 */
export function validateControllerOptions(options: KubernetesControllerOptions): WorkloadIdentity {
  const { namespace, identity } = options;
  try {
    parseLabelSelector(options.agentSelector);
    validateLeaderElectionTimings({
      leaseDurationMs: options.leaseDurationMs ?? LEASE_DURATION_MS,
      renewDeadlineMs: options.renewDeadlineMs ?? RENEW_DEADLINE_MS,
      retryPeriodMs: options.retryPeriodMs ?? RETRY_PERIOD_MS,
    });
  } catch (error: unknown) {
    throw new ControllerError("ERR_CONTROLLER_CONFIG", error instanceof Error ? error.message : String(error), { cause: error });
  }
  if (namespace === "") throw new ControllerError("ERR_CONTROLLER_CONFIG", "namespace must not be empty");
  const self = { role: "controller" as const, name: identity, ips: [] };
  try {
    identityUri(self);
  } catch (error: unknown) {
    throw new ControllerError(
      "ERR_CONTROLLER_CONFIG",
      `identity ${JSON.stringify(identity)} cannot name a certificate: ${error instanceof Error ? error.message : String(error)}`,
      { cause: error },
    );
  }
  return self;
}
