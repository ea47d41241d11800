import { createPublicKey } from "node:crypto";
import { CertificateAuthority, generateKey } from "../certificate-authority.js";
import { type TlsMaterial, materialFromPem } from "../tls-material.js";
import type { WorkloadIdentity } from "../workload-identity.js";

const HOUR_MS = 3_600_000;

/** A throwaway CA for tests, and material (key, certificate, trust bundle) for any identity it names. */
export class TestPki {
  private constructor(
    readonly ca: CertificateAuthority,
    readonly keyPem: string,
  ) {}

  static create(commonName = "shoal test CA"): TestPki {
    const { ca, keyPem } = CertificateAuthority.createSelfSigned({
      commonName,
      lifetimeMs: 24 * HOUR_MS,
      now: new Date(Date.now() - HOUR_MS),
    });
    return new TestPki(ca, keyPem);
  }

  get trustBundlePem(): string {
    return this.ca.certificatePem;
  }

  /** Material for `identity`, valid from `now` for `lifetimeMs` (default an hour). */
  material(identity: WorkloadIdentity, options: { lifetimeMs?: number; now?: Date; trustBundlePem?: string } = {}): TlsMaterial {
    const key = generateKey();
    const issued = this.ca.issue({
      publicKey: createPublicKey(key),
      identity,
      lifetimeMs: options.lifetimeMs ?? HOUR_MS,
      ...(options.now === undefined ? {} : { now: options.now }),
    });
    return materialFromPem({
      keyPem: key.export({ type: "pkcs8", format: "pem" }).toString(),
      certificatePem: issued.certificatePem,
      trustBundlePem: options.trustBundlePem ?? this.trustBundlePem,
    });
  }

  /** An agent on `ip` named `nodeName`. */
  agent(nodeName: string, ip = "127.0.0.1", options: { lifetimeMs?: number; now?: Date } = {}): TlsMaterial {
    return this.material({ role: "agent", name: nodeName, ips: [ip] }, options);
  }

  controller(name = "controller-0", ips: readonly string[] = ["127.0.0.1"]): TlsMaterial {
    return this.material({ role: "controller", name, ips });
  }
}
