import { CoreV1Api, type KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { CertificateAuthority, isIdentityError } from "../identity/index.js";
import { toK8sError, withSignal } from "../k8s/index.js";
import { Backoff, abortableDelay } from "../util/index.js";

/** The CA Secret is read again this often, so a replaced CA (rotation, bring your own) is picked up. */
export const CA_RELOAD_INTERVAL_MS = 5 * 60_000;
const CA_READ_TIMEOUT_MS = 10_000;

export interface SecretCertificateAuthorityOptions {
  readonly kubeConfig: KubeConfig;
  readonly namespace: string;
  /** A kubernetes.io/tls Secret: tls.crt (the CA certificate) and tls.key (its key). */
  readonly name: string;
  readonly logger: Logger;
  readonly reloadIntervalMs?: number;
  /** Tests: a shorter first retry. */
  readonly initialRetryMs?: number;
}

/**
 * The issuing CA from a Secret (the chart creates one with a generated CA, or names yours, e.g. one
 * cert-manager maintains): read with `get` on that one Secret, retried with capped backoff until it
 * is there and valid, then read again every few minutes.
 */
export class SecretCertificateAuthority {
  private ca: CertificateAuthority | undefined;
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private readonly api: CoreV1Api;

  constructor(private readonly options: SecretCertificateAuthorityOptions) {
    this.api = options.kubeConfig.makeApiClient(CoreV1Api);
  }

  /** The CA to sign with, or undefined until the Secret was read. */
  current(): CertificateAuthority | undefined {
    return this.ca;
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    const backoff = new Backoff({ initialDelayMs: this.options.initialRetryMs ?? 1_000, maxDelayMs: 30_000 });
    while (!signal.aborted) {
      const loaded = await this.load(signal);
      const delay = loaded ? (this.options.reloadIntervalMs ?? CA_RELOAD_INTERVAL_MS) : backoff.next();
      if (loaded) backoff.reset();
      try {
        await abortableDelay(delay, signal);
      } catch {
        return;
      }
    }
  }

  private async load(signal: AbortSignal): Promise<boolean> {
    const { namespace, name, logger } = this.options;
    try {
      const secret = await this.api.readNamespacedSecret(
        { name, namespace },
        withSignal(AbortSignal.any([signal, AbortSignal.timeout(CA_READ_TIMEOUT_MS)])),
      );
      const certificate = secret.data?.["tls.crt"];
      const key = secret.data?.["tls.key"];
      if (certificate === undefined || key === undefined) throw new Error("it has no tls.crt and tls.key");
      const ca = CertificateAuthority.fromPem(
        Buffer.from(certificate, "base64").toString("utf8"),
        Buffer.from(key, "base64").toString("utf8"),
      );
      const changed = this.ca === undefined || !this.ca.certificate.raw.equals(ca.certificate.raw);
      this.ca = ca;
      if (changed)
        logger.info(
          { secret: `${namespace}/${name}`, subject: ca.certificate.subject.replace(/\n/g, ", "), notAfter: ca.certificate.validTo },
          "CA loaded",
        );
      return true;
    } catch (error: unknown) {
      if (signal.aborted) return false;
      const detail = isIdentityError(error) ? error.message : toK8sError(error, `get secret ${namespace}/${name}`).message;
      logger.error(
        { secret: `${namespace}/${name}`, details: detail, kept: this.ca !== undefined },
        "CA Secret unusable: certificates cannot be issued until it is (the chart creates it; see identity values)",
      );
      return false;
    }
  }
}
