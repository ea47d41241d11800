import { createPublicKey } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CertificateAuthority, type WorkloadIdentity, generateKey } from "../../pkg/identity/index.js";

/** The demo's certificates last as long as a demo could possibly run. */
const DEMO_CERTIFICATE_LIFETIME_MS = 24 * 3_600_000;

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
 * A throwaway CA for one demo run and a certificate per process, written to `dir`: the demo runs its
 * swarm with mutual TLS like a cluster does, without a cluster (on Kubernetes the controller is the CA
 * and each agent's key never leaves its node; here one process makes them all).
 */
export class DemoPki {
  private constructor(
    private readonly dir: string,
    private readonly ca: CertificateAuthority,
    private readonly caFile: string,
  ) {}

  static async create(dir: string): Promise<DemoPki> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const { ca, certificatePem } = CertificateAuthority.createSelfSigned({ commonName: "shoal demo CA (throwaway)", lifetimeMs: DEMO_CERTIFICATE_LIFETIME_MS });
    const caFile = join(dir, "ca.crt");
    await writeFile(caFile, certificatePem);
    return new DemoPki(dir, ca, caFile);
  }

  /** Key and certificate files for `identity` (named after it). */
  async issue(identity: WorkloadIdentity): Promise<CertificateFiles> {
    const key = generateKey();
    const issued = this.ca.issue({ publicKey: createPublicKey(key), identity, lifetimeMs: DEMO_CERTIFICATE_LIFETIME_MS });
    const base = join(this.dir, `${identity.role}-${identity.name}`);
    await writeFile(`${base}.key`, key.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    await writeFile(`${base}.crt`, issued.certificatePem);
    return { cert: `${base}.crt`, key: `${base}.key`, ca: this.caFile };
  }
}
