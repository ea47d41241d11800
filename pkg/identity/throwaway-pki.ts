import { createPublicKey } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CertificateAuthority, generateKey } from "./certificate-authority.js";
import type { WorkloadIdentity } from "./workload-identity.js";

/** Long enough for any demo or test run. */
const THROWAWAY_LIFETIME_MS = 24 * 3_600_000;

export interface CertificateFiles {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
}

/** `--tls-cert … --tls-key … --tls-ca …` for one process. */
export function tlsArgs(files: CertificateFiles): string[] {
  return ["--tls-cert", files.cert, "--tls-key", files.key, "--tls-ca", files.ca];
}

/**
 * A throwaway CA for one run (`shoal demo`, multi-process tests and benchmarks) and certificate files
 * per process in `dir`, for --tls-cert/--tls-key/--tls-ca: swarms without a cluster run with mutual TLS
 * as a cluster does. (On Kubernetes the controller is the CA and each agent's key never leaves its
 * node; here one process makes them all.)
 */
export class ThrowawayPki {
  private constructor(
    private readonly dir: string,
    private readonly ca: CertificateAuthority,
    private readonly caFile: string,
    private readonly caPem: { readonly certificatePem: string; readonly keyPem: string },
  ) {}

  static async create(dir: string, commonName = "shoal throwaway CA"): Promise<ThrowawayPki> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const { ca, certificatePem, keyPem } = CertificateAuthority.createSelfSigned({ commonName, lifetimeMs: THROWAWAY_LIFETIME_MS });
    const caFile = join(dir, "ca.crt");
    await writeFile(caFile, certificatePem);
    return new ThrowawayPki(dir, ca, caFile, { certificatePem, keyPem });
  }

  /** The CA as a `kubernetes.io/tls` Secret holds it (for a controller that signs with this CA itself). */
  caSecretData(): { "tls.crt": string; "tls.key": string } {
    return { "tls.crt": this.caPem.certificatePem, "tls.key": this.caPem.keyPem };
  }

  /** Key and certificate files for `identity` (named after it), valid for `lifetimeMs` (default a day). */
  async issue(identity: WorkloadIdentity, lifetimeMs = THROWAWAY_LIFETIME_MS): Promise<CertificateFiles> {
    const key = generateKey();
    const issued = this.ca.issue({ publicKey: createPublicKey(key), identity, lifetimeMs });
    const base = join(this.dir, `${identity.role}-${identity.name}`);
    // Written in place, so a process watching these files sees a renewal (key first: a reader may see the
    // new key with the old certificate for a moment, which it refuses and retries).
    await writeFile(`${base}.key`, key.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    await writeFile(`${base}.crt`, issued.certificatePem);
    return { cert: `${base}.crt`, key: `${base}.key`, ca: this.caFile };
  }
}
