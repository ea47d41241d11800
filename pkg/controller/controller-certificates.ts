import type { KubeConfig, V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { CertificateManager, LocalIssuer, type WorkloadIdentity } from "../identity/index.js";
import { type EventRecorder, type Informer, podReference } from "../k8s/index.js";
import type { ControllerMetrics } from "../metrics/index.js";
import { SecretCertificateAuthority } from "./ca-secret.js";
import { TokenAuthenticator } from "./token-authenticator.js";

/** Workload certificates: the controller is the CA (its key in a Secret) and issues agents theirs. */
export interface CertificateSettings {
  /** The kubernetes.io/tls Secret (in the namespace) holding the CA certificate and key. */
  readonly caSecret: string;
  /** Where the issuer (IdentityService) listens. */
  readonly issuerListen: { readonly host: string; readonly port: number };
  /** Lifetime of issued certificates (agents' and the controller's own). */
  readonly lifetimeMs: number;
  /** The audience of the agents' projected ServiceAccount tokens. */
  readonly tokenAudience: string;
  /** Tests: first retry of the controller's own certificate and of the CA Secret. */
  readonly retryInitialMs?: number;
}

/** What the controller's certificate parts are made from (KubernetesControllerOptions, and what start() made). */
export interface CertificatePartsOptions {
  readonly kubeConfig: KubeConfig;
  readonly namespace: string;
  /** This replica (the pod name): the name its certificate is requested under. */
  readonly identity: string;
  /** The controller's workload identity (validated: it names a certificate). */
  readonly self: WorkloadIdentity;
  readonly settings: CertificateSettings;
  readonly metrics: ControllerMetrics | undefined;
  readonly logger: Logger;
  /** The agent Pods: a token is accepted only from one of them. */
  readonly pods: Informer<V1Pod>;
  /** Refused certificate requests become Warning Events on their Pod. */
  readonly recorder: EventRecorder;
}

/** The CA (its key in a Secret), the controller's own certificate, and the authenticator of agents asking for theirs. */
export interface CertificateParts {
  readonly ca: SecretCertificateAuthority;
  readonly certificate: CertificateManager;
  readonly authenticator: TokenAuthenticator;
}

/**
 * The controller's side of workload certificates: the CA whose key lives in a Secret, the controller's own
 * certificate (issued in process and rotated like an agent's), and the check of the ServiceAccount tokens
 * agents present to the issuer. Nothing is started here (SecretCertificateAuthority.start, CertificateManager.start).
 */
export function certificateParts(options: CertificatePartsOptions): CertificateParts {
  const { kubeConfig, namespace, identity, self, settings, metrics, logger, pods, recorder } = options;
  // The controller's own certificate comes from the same CA, issued in process and rotated like an agent's.
  const ca = new SecretCertificateAuthority({
    kubeConfig,
    namespace,
    name: settings.caSecret,
    logger: logger.child({ component: "ca" }),
    ...(settings.retryInitialMs === undefined ? {} : { initialRetryMs: settings.retryInitialMs }),
  });
  const certificate = new CertificateManager({
    issuer: new LocalIssuer({
      ca: () => ca.current(),
      identity: self,
      lifetimeMs: settings.lifetimeMs,
      onIssued: () => metrics?.identity.certificatesIssued?.inc(),
    }),
    role: "controller",
    requestName: identity,
    logger: logger.child({ component: "certificate" }),
    ...(settings.retryInitialMs === undefined ? {} : { retryInitialMs: settings.retryInitialMs, retryMaxMs: 10 * settings.retryInitialMs }),
    onIssued: (material) => metrics?.identity.certificateObtained(material.notAfter),
    onFailure: () => metrics?.identity.rotationFailures.inc(),
  });
  const authenticator = new TokenAuthenticator({
    kubeConfig,
    pods,
    namespace,
    audience: settings.tokenAudience,
    logger: logger.child({ component: "authenticator" }),
    onRefused: (pod, message) => {
      if (pod?.metadata?.name === undefined) return;
      recorder.record(podReference(pod, namespace), "Warning", "CertificateRefused", message);
    },
  });
  return { ca, certificate, authenticator };
}
