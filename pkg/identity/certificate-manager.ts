import { randomInt } from "node:crypto";
import type { Logger } from "pino";
import { generateKey } from "./certificate-authority.js";
import { IdentityError, isIdentityError } from "./errors.js";
import { type IdentitySource, type TlsMaterial, materialFromPem } from "./tls-material.js";
import { type WorkloadRole, describeIdentity } from "./workload-identity.js";
import { OID, createCertificateRequest } from "./x509.js";

/** Renew once this share of a certificate's lifetime has passed: a third of it is left for retries. */
export const DEFAULT_RENEW_AT_FRACTION = 2 / 3;
/** Renewal times are spread by up to this share of the lifetime, so agents started together do not renew together. */
const RENEW_JITTER_FRACTION = 0.05;
export const DEFAULT_RETRY_INITIAL_MS = 1_000;
export const DEFAULT_RETRY_MAX_MS = 30_000;
/** One issuance request may take this long. */
export const DEFAULT_ISSUE_TIMEOUT_MS = 10_000;

/** Whoever signs certificates for this workload: the controller over gRPC, or a CA in process. */
export interface CertificateIssuer {
  /** A certificate for the key of the DER certificate request `csr`, and the trust bundle to use with it. */
  issue(csr: Buffer, signal: AbortSignal): Promise<{ certificatePem: string; trustBundlePem: string }>;
}

export interface CertificateManagerOptions {
  readonly issuer: CertificateIssuer;
  /** The role the issued certificate must name (a controller's issuer must not hand an agent another role). */
  readonly role: WorkloadRole;
  /** Subject common name of requests (informational; the issuer decides what certificates say). */
  readonly requestName: string;
  readonly logger: Logger;
  readonly renewAtFraction?: number;
  readonly retryInitialMs?: number;
  readonly retryMaxMs?: number;
  readonly issueTimeoutMs?: number;
  /** A certificate was issued (first or rotation): for the expiry metric. */
  readonly onIssued?: (material: TlsMaterial) => void;
  /** An issuance failed (it is retried): for the failure metric. */
  readonly onFailure?: (error: unknown) => void;
}

/**
 * Keeps a workload's certificate current: generates a key (it never leaves this process), asks the
 * issuer to sign a request for it, and does so again well before the certificate expires (by default
 * at two thirds of its lifetime, with a new key), retrying with capped backoff. Each new certificate
 * goes to the subscribers: listeners apply it to new handshakes, clients to new connections, and
 * connections already open carry on, so a rotation drops no transfer.
 */
export class CertificateManager implements IdentitySource {
  private material: TlsMaterial | undefined;
  private readonly listeners = new Set<(material: TlsMaterial) => void>();
  private readonly waiters = new Set<() => void>();
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private failures = 0;
  private started = false;

  constructor(private readonly options: CertificateManagerOptions) {
    const fraction = options.renewAtFraction ?? DEFAULT_RENEW_AT_FRACTION;
    if (!(fraction > 0 && fraction < 1)) throw new RangeError(`renewAtFraction must be within (0, 1), got ${fraction}`);
  }

  /** Starts asking for the first certificate (in the background). */
  start(): void {
    if (this.started) return;
    this.started = true;
    this.schedule(0);
  }

  current(): TlsMaterial | undefined {
    const material = this.material;
    return material !== undefined && material.notAfter.getTime() > Date.now() ? material : undefined;
  }

  subscribe(listener: (material: TlsMaterial) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves with the first certificate; rejects when `signal` aborts or the manager is closed. */
  async whenReady(signal?: AbortSignal): Promise<TlsMaterial> {
    for (;;) {
      const material = this.current();
      if (material !== undefined) return material;
      if (this.abort.signal.aborted) throw new IdentityError("ERR_IDENTITY_ABORTED", "certificate manager closed");
      signal?.throwIfAborted();
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.waiters.delete(done);
          signal?.removeEventListener("abort", done);
          resolve();
        };
        this.waiters.add(done);
        signal?.addEventListener("abort", done, { once: true });
      });
    }
  }

  /** Renews now (tests; an operator's signal). Resolves when this attempt ended. */
  async renewNow(): Promise<void> {
    clearTimeout(this.timer);
    await this.running;
    this.running = this.attempt();
    await this.running;
  }

  async close(): Promise<void> {
    this.abort.abort(new IdentityError("ERR_IDENTITY_ABORTED", "certificate manager closed"));
    clearTimeout(this.timer);
    for (const wake of [...this.waiters]) wake();
    await this.running;
  }

  private schedule(delayMs: number): void {
    if (this.abort.signal.aborted) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(
      () => {
        this.running = this.attempt();
      },
      Math.max(0, delayMs),
    );
    this.timer.unref();
  }

  private async attempt(): Promise<void> {
    const { logger } = this.options;
    try {
      const material = await this.request();
      this.failures = 0;
      const previous = this.material;
      this.material = material;
      this.options.onIssued?.(material);
      logger.info(
        { identity: describeIdentity(material.identity), notAfter: material.notAfter.toISOString(), rotation: previous !== undefined },
        previous === undefined ? "certificate issued" : "certificate rotated",
      );
      for (const listener of [...this.listeners]) {
        try {
          listener(material);
        } catch (error: unknown) {
          logger.error({ err: error }, "certificate listener failed");
        }
      }
      for (const wake of [...this.waiters]) wake();
      this.schedule(this.renewalDelayMs(material, Date.now()));
    } catch (error: unknown) {
      if (this.abort.signal.aborted) return;
      this.failures++;
      this.options.onFailure?.(error);
      const delayMs = Math.min(
        (this.options.retryInitialMs ?? DEFAULT_RETRY_INITIAL_MS) * 2 ** (this.failures - 1),
        this.options.retryMaxMs ?? DEFAULT_RETRY_MAX_MS,
      );
      const held = this.current();
      const level = held === undefined || held.notAfter.getTime() - Date.now() < 2 * delayMs ? "error" : "warn";
      logger[level](
        { err: error, failures: this.failures, retryInMs: delayMs, expiresAt: held?.notAfter.toISOString() },
        held === undefined ? "certificate request failed" : "certificate renewal failed",
      );
      this.schedule(delayMs);
    }
  }

  private async request(): Promise<TlsMaterial> {
    const key = generateKey();
    const csr = createCertificateRequest(key, [{ oid: OID.commonName, value: this.options.requestName }]);
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.options.issueTimeoutMs ?? DEFAULT_ISSUE_TIMEOUT_MS)]);
    const issued = await this.options.issuer.issue(csr, signal);
    let material: TlsMaterial;
    try {
      material = materialFromPem({ keyPem: key.export({ type: "pkcs8", format: "pem" }).toString(), ...issued });
    } catch (error: unknown) {
      throw isIdentityError(error)
        ? new IdentityError("ERR_IDENTITY_MALFORMED", `the issuer answered with unusable material: ${error.message}`, { cause: error })
        : error;
    }
    if (material.identity.role !== this.options.role) {
      throw new IdentityError(
        "ERR_IDENTITY_MALFORMED",
        `the issuer named this workload ${describeIdentity(material.identity)}, not a ${this.options.role}`,
      );
    }
    return material;
  }

  /**
   * From when the certificate arrived, not its notBefore: issuers backdate notBefore for clock skew,
   * which would otherwise eat into the time left before expiry.
   */
  private renewalDelayMs(material: TlsMaterial, receivedAtMs: number): number {
    const lifetime = material.notAfter.getTime() - receivedAtMs;
    const fraction = this.options.renewAtFraction ?? DEFAULT_RENEW_AT_FRACTION;
    const jitter = Math.floor(lifetime * RENEW_JITTER_FRACTION);
    return lifetime * fraction - (jitter > 0 ? randomInt(jitter) : 0);
  }
}
