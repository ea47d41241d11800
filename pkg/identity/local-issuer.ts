import type { CertificateAuthority } from "./certificate-authority.js";
import type { CertificateIssuer } from "./certificate-manager.js";
import { IdentityError } from "./errors.js";
import type { WorkloadIdentity } from "./workload-identity.js";
import { parseCertificateRequest } from "./x509.js";

/**
 * Signs in process with a CA this process holds: the controller's own certificate, which it issues
 * itself and rotates like any other (through a CertificateManager).
 */
export class LocalIssuer implements CertificateIssuer {
  constructor(
    private readonly options: {
      readonly ca: () => CertificateAuthority | undefined;
      readonly identity: WorkloadIdentity;
      readonly lifetimeMs: number;
      readonly onIssued?: () => void;
    },
  ) {}

  issue(csr: Buffer): Promise<{ certificatePem: string; trustBundlePem: string }> {
    const ca = this.options.ca();
    if (ca === undefined) return Promise.reject(new IdentityError("ERR_IDENTITY_UNAVAILABLE", "the CA is not loaded yet"));
    try {
      const { publicKey } = parseCertificateRequest(csr);
      const issued = ca.issue({ publicKey, identity: this.options.identity, lifetimeMs: this.options.lifetimeMs });
      this.options.onIssued?.();
      return Promise.resolve({ certificatePem: issued.certificatePem, trustBundlePem: ca.certificatePem });
    } catch (error: unknown) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }
}
